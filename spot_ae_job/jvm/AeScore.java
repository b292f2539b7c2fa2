package spotae;

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;

import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.AttributeReference;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.expressions.JoinedRow;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.classic.Dataset;
import org.apache.spark.sql.execution.ColumnarToRowExec;
import org.apache.spark.sql.execution.InputAdapter;
import org.apache.spark.sql.execution.ProjectExec;
import org.apache.spark.sql.execution.SparkPlan;
import org.apache.spark.sql.execution.WholeStageCodegenExec;
import org.apache.spark.sql.execution.adaptive.AdaptiveSparkPlanExec;
import org.apache.spark.sql.execution.vectorized.Dictionary;
import org.apache.spark.sql.execution.vectorized.OnHeapColumnVector;
import org.apache.spark.sql.execution.vectorized.WritableColumnVector;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.vectorized.ColumnVector;
import org.apache.spark.sql.vectorized.ColumnarBatch;
import org.apache.spark.unsafe.types.UTF8String;

import scala.jdk.javaapi.CollectionConverters;

/**
 * Spark's side of the JVM scorer: a DataFrame of flows -> the same flows (the columns asked for)
 * + `score`, every row scored by AeBatch a block at a time. score.py calls `score` through py4j.
 *
 * Two ways in, one scorer:
 * - columnar: when the DataFrame is a plain read (a Parquet scan or a cached table, optionally
 *   with columns selected or reordered), Spark already holds the rows as column vectors
 *   (ColumnarBatch); the scorer reads them as they are, Parquet dictionaries included (a
 *   protocol or a port is worked out once per distinct value of a column chunk), and the
 *   result is the batch's own vectors plus a score vector: no row is built for the input.
 * - rows: any other plan (filters, joins, computed columns) is run by Spark as usual and its
 *   rows are buffered a block at a time.
 * `path(df)` says which one a DataFrame takes. A model with inputs past the 18 (ae-context's
 * host context, float columns Spark computes from the other flows) reads them ready-made from
 * the rows, so it always takes the rows path. Why not a UDF: a UDF sees one row per call, so
 * none of the arithmetic can be vectorized (the UDF this replaces ran ~3x slower).
 */
public final class AeScore {
    static final String[] INPUTS = {"proto", "flag", "sport", "dport", "tdur", "ipkt", "ibyt", "opkt", "obyt"};
    static final DataType[] INPUT_TYPES = {DataTypes.StringType, DataTypes.StringType, DataTypes.IntegerType,
        DataTypes.IntegerType, DataTypes.FloatType, DataTypes.LongType, DataTypes.LongType, DataTypes.LongType,
        DataTypes.LongType};

    private AeScore() {}

    /** "columnar" or "rows": how `score` reads this DataFrame. */
    public static String path(Dataset<Row> df) {
        return columnar(df) != null ? "columnar" : "rows";
    }

    /**
     * df (with the 9 input columns in their flow-table types: score.py casts) -> the columns
     * `keep` of df, in that order, + `scoreCol` (double, never null for the 18 features; NaN
     * where a ready-made input is null or NaN, as the numpy scorer gives). `readyList`: float
     * columns of df that are the model's inputs after the 18 (ae-context's host context, which
     * Spark computes over the other flows), in weight order; empty for the paper's model.
     */
    public static Dataset<Row> score(Dataset<Row> df, byte[] model, List<String> keepList, String scoreCol,
                                     List<String> readyList) {
        String[] keep = keepList.toArray(new String[0]), ready = readyList.toArray(new String[0]);
        StructType schema = df.schema();
        for (int i = 0; i < INPUTS.length; i++) {
            DataType t = schema.apply(INPUTS[i]).dataType();
            if (!t.equals(INPUT_TYPES[i])) {
                throw new IllegalArgumentException("column " + INPUTS[i] + " is " + t.simpleString() + ", the scorer reads "
                    + INPUT_TYPES[i].simpleString());
            }
        }
        for (String r : ready) {
            DataType t = schema.apply(r).dataType();
            if (!t.equals(DataTypes.FloatType)) {
                throw new IllegalArgumentException("column " + r + " is " + t.simpleString() + ", the scorer reads float");
            }
        }
        int nIn = new AeBatch(model).nIn;  // a bad model fails here, on the driver, not in every task
        if (nIn != AeBatch.FEATURES + ready.length) {
            throw new IllegalArgumentException("the model has " + nIn + " inputs, not 18 + " + ready.length + " ready-made");
        }
        List<StructField> fields = new ArrayList<>();
        for (String k : keep) fields.add(schema.apply(k));
        fields.add(DataTypes.createStructField(scoreCol, DataTypes.DoubleType, false));
        StructType out = DataTypes.createStructType(fields);

        Columnar c = ready.length == 0 ? columnar(df) : null;  // ready-made inputs are computed: never a plain read
        if (c != null) {
            int[] in = c.indices(schema, INPUTS), kept = c.indices(schema, keep);
            RDD<InternalRow> rows = c.scan.executeColumnar().toJavaRDD()
                .mapPartitions(new ColumnarTask(model, in, kept)).rdd();
            return df.sparkSession().internalCreateDataFrame(rows, out, false);
        }
        int[] in = new int[INPUTS.length], readyIn = new int[ready.length];
        for (int i = 0; i < in.length; i++) in[i] = schema.fieldIndex(INPUTS[i]);
        for (int i = 0; i < ready.length; i++) readyIn[i] = schema.fieldIndex(ready[i]);
        List<StructField> all = new ArrayList<>(Arrays.asList(schema.fields()));
        all.add(fields.get(fields.size() - 1));
        RDD<InternalRow> rows = df.queryExecution().toRdd().toJavaRDD().mapPartitions(new RowTask(model, in, readyIn)).rdd();
        Dataset<Row> scored = df.sparkSession().internalCreateDataFrame(rows, DataTypes.createStructType(all), false);
        Column[] cols = new Column[keep.length + 1];
        for (int i = 0; i < keep.length; i++) cols[i] = functions.col("`" + keep[i].replace("`", "``") + "`");
        cols[keep.length] = functions.col(scoreCol);
        return scored.select(cols);
    }

    // ---- which plans are a plain columnar read -------------------------------------------

    /** A plan whose rows Spark makes from column vectors: its vector source and its columns. */
    static final class Columnar {
        final SparkPlan scan;
        final List<Attribute> scanOutput, dfOutput;

        Columnar(SparkPlan scan, List<Attribute> dfOutput) {
            this.scan = scan;
            this.scanOutput = CollectionConverters.asJava(scan.output());
            this.dfOutput = dfOutput;
        }

        /** For each name, the index of its vector in the scan's batches. */
        int[] indices(StructType schema, String[] names) {
            int[] out = new int[names.length];
            for (int i = 0; i < names.length; i++) {
                Attribute a = dfOutput.get(schema.fieldIndex(names[i]));
                out[i] = -1;
                for (int k = 0; k < scanOutput.size(); k++) {
                    if (scanOutput.get(k).exprId().equals(a.exprId())) out[i] = k;
                }
                if (out[i] < 0) throw new IllegalStateException("column " + names[i] + " not in the scan's output");
            }
            return out;
        }
    }

    /** [AdaptiveSparkPlan] [WholeStageCodegen] [Project of plain columns] [ColumnarToRow]
     * (a leaf that produces column vectors: a Parquet scan, a cached table), else null. */
    static Columnar columnar(Dataset<Row> df) {
        SparkPlan top = df.queryExecution().executedPlan();
        List<Attribute> dfOutput = CollectionConverters.asJava(top.output());
        SparkPlan p = top;
        if (p instanceof AdaptiveSparkPlanExec) p = ((AdaptiveSparkPlanExec) p).executedPlan();  // not run yet: its first plan
        if (p instanceof WholeStageCodegenExec) p = ((WholeStageCodegenExec) p).child();
        if (p instanceof ProjectExec) {
            for (NamedExpression e : CollectionConverters.asJava(((ProjectExec) p).projectList())) {
                if (!(e instanceof AttributeReference)) return null;  // a computed column: not a plain read
            }
            p = ((ProjectExec) p).child();
        }
        if (p instanceof ColumnarToRowExec) p = ((ColumnarToRowExec) p).child();
        if (p instanceof InputAdapter) p = ((InputAdapter) p).child();
        if (!p.supportsColumnar() || !p.children().isEmpty()) return null;
        return new Columnar(p, dfOutput);
    }

    // ---- the columnar path ----------------------------------------------------------------

    /** One task: each input batch -> its scores -> rows of the kept vectors + the score vector. */
    static final class ColumnarTask implements FlatMapFunction<Iterator<ColumnarBatch>, InternalRow> {
        private static final long serialVersionUID = 1L;
        private final byte[] model;
        private final int[] in, kept;

        ColumnarTask(byte[] model, int[] in, int[] kept) {
            this.model = model;
            this.in = in;
            this.kept = kept;
        }

        @Override
        public Iterator<InternalRow> call(Iterator<ColumnarBatch> batches) {
            final AeBatch ae = new AeBatch(model);
            final ColumnarSource src = new ColumnarSource(ae, in);
            return new Iterator<InternalRow>() {
                private Iterator<InternalRow> rows = java.util.Collections.emptyIterator();
                private OnHeapColumnVector scores = new OnHeapColumnVector(4096, DataTypes.DoubleType);
                private double[] buf = new double[4096];

                @Override
                public boolean hasNext() {
                    while (!rows.hasNext()) {
                        if (!batches.hasNext()) {
                            scores.close();
                            return false;
                        }
                        ColumnarBatch b = batches.next();  // valid until the next one is read
                        int n = b.numRows();
                        if (buf.length < n) {
                            buf = new double[n];
                            scores.close();
                            scores = new OnHeapColumnVector(n, DataTypes.DoubleType);
                        }
                        src.score(b, buf);
                        scores.putDoubles(0, n, buf, 0);
                        ColumnVector[] cols = new ColumnVector[kept.length + 1];
                        for (int i = 0; i < kept.length; i++) cols[i] = b.column(kept[i]);
                        cols[kept.length] = scores;
                        rows = new ColumnarBatch(cols, n).rowIterator();
                    }
                    return true;
                }

                @Override
                public InternalRow next() {
                    if (!hasNext()) throw new NoSuchElementException();
                    return rows.next();
                }
            };
        }
    }

    /** Fills AeBatch's blocks from a batch's vectors. Numeric columns are read through their
     * Parquet dictionary when the reader kept it (every value of the chunk dictionary-encoded):
     * count and log1p are then worked out once per dictionary entry and gathered. */
    static final class ColumnarSource {
        private final AeBatch ae;
        private final int[] in;
        private final Strings proto = new Strings(false), flag = new Strings(true);
        private final Num[] nums = {new Num(Num.INT), new Num(Num.INT), new Num(Num.FLOAT), new Num(Num.LONG),
            new Num(Num.LONG), new Num(Num.LONG), new Num(Num.LONG)};

        ColumnarSource(AeBatch ae, int[] in) {
            this.ae = ae;
            this.in = in;
        }

        void score(ColumnarBatch b, double[] out) {
            int n = b.numRows();
            proto.bind(b.column(in[0]), n);
            flag.bind(b.column(in[1]), n);
            for (int k = 0; k < nums.length; k++) nums[k].bind(b.column(in[2 + k]), n);
            double[] none = null;
            for (int r0 = 0; r0 < n; r0 += AeBatch.BLOCK) {
                int len = Math.min(AeBatch.BLOCK, n - r0);
                proto.fill(r0, len, ae.protoBits);
                flag.fill(r0, len, ae.flagBits);
                nums[0].fill(r0, len, none, ae.x[9]);
                nums[1].fill(r0, len, none, ae.x[10]);
                nums[2].fill(r0, len, none, ae.x[11]);
                nums[3].fill(r0, len, ae.ipkt, ae.x[12]);
                nums[4].fill(r0, len, ae.ibyt, ae.x[13]);
                nums[5].fill(r0, len, ae.opkt, ae.x[14]);
                nums[6].fill(r0, len, ae.obyt, ae.x[15]);
                ae.scoreBlock(len, out, r0);
            }
        }
    }

    // WritableColumnVector's dictionary has no getter; Spark wraps the column chunk's Parquet
    // dictionary in a new ParquetDictionary for every batch, so the chunk's own dictionary (the
    // wrapper's field) is what says "same values as the last batch".
    private static final Field DICTIONARY = field(WritableColumnVector.class, "dictionary");
    private static final Field PARQUET_DICTIONARY =
        field(org.apache.spark.sql.execution.datasources.parquet.ParquetDictionary.class, "dictionary");

    private static Field field(Class<?> c, String name) {
        try {
            Field f = c.getDeclaredField(name);
            f.setAccessible(true);
            return f;
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;  // then columns are read value by value, or entries re-learnt per batch: slower, same scores
        }
    }

    /** The vector's dictionary when it is dictionary-encoded, else null. */
    static Dictionary dictionary(ColumnVector v) {
        if (DICTIONARY == null || !(v instanceof WritableColumnVector) || !((WritableColumnVector) v).hasDictionary()) {
            return null;
        }
        try {
            return (Dictionary) DICTIONARY.get(v);
        } catch (IllegalAccessException e) {
            return null;
        }
    }

    /** What identifies a dictionary's values across batches: the Parquet chunk's dictionary. */
    static Object dictionaryKey(Dictionary d) {
        if (PARQUET_DICTIONARY != null && d instanceof org.apache.spark.sql.execution.datasources.parquet.ParquetDictionary) {
            try {
                Object inner = PARQUET_DICTIONARY.get(d);
                if (inner != null) return inner;
            } catch (IllegalAccessException e) {
                return d;
            }
        }
        return d;
    }

    /** A numeric input column: count then log1p, per dictionary entry when it has one. */
    static final class Num {
        static final int INT = 0, LONG = 1, FLOAT = 2;
        private final int kind;
        private ColumnVector v;
        private boolean nulls;
        private int[] ids;  // the batch's dictionary ids, or null
        private Dictionary dict;
        private Object dictKey;
        private double[] raw = new double[0];  // count per dictionary id; NaN = not yet
        private float[] lg = new float[0];  // float32 of its log1p

        Num(int kind) {
            this.kind = kind;
        }

        void bind(ColumnVector vec, int n) {
            v = vec;
            nulls = vec.hasNull();
            Dictionary d = dictionary(vec);
            if (d == null) {
                ids = null;
                return;
            }
            dict = d;
            Object key = dictionaryKey(d);
            if (key != dictKey) {  // a new column chunk
                dictKey = key;
                Arrays.fill(raw, Double.NaN);
            }
            ids = ((WritableColumnVector) vec).getDictionaryIds().getInts(0, n);
        }

        private double value(int i) {
            if (nulls && v.isNullAt(i)) return 0.0;
            switch (kind) {
                case INT: return AeBatch.count(v.getInt(i));
                case LONG: return AeBatch.count(v.getLong(i));
                default: return AeBatch.count(v.getFloat(i));
            }
        }

        private double decode(int id) {
            switch (kind) {
                case INT: return AeBatch.count(dict.decodeToInt(id));
                case LONG: return AeBatch.count(dict.decodeToLong(id));
                default: return AeBatch.count(dict.decodeToFloat(id));
            }
        }

        /** rows [r0, r0 + len) -> counts (if `rawOut`) and float32 of log1p (`logOut`). */
        void fill(int r0, int len, double[] rawOut, float[] logOut) {
            if (ids == null) {
                double[] x = rawOut != null ? rawOut : scratch(len);
                if (nulls) {
                    for (int r = 0; r < len; r++) x[r] = value(r0 + r);
                } else if (kind == INT) {  // one loop per type, no null checks: the common case
                    for (int r = 0; r < len; r++) x[r] = AeBatch.count(v.getInt(r0 + r));
                } else if (kind == LONG) {
                    for (int r = 0; r < len; r++) x[r] = AeBatch.count(v.getLong(r0 + r));
                } else {
                    for (int r = 0; r < len; r++) x[r] = AeBatch.count(v.getFloat(r0 + r));
                }
                for (int r = 0; r < len; r++) logOut[r] = (float) AeBatch.log1p(x[r]);
                return;
            }
            final int[] ids = this.ids;
            for (int r = 0; r < len; r++) {  // first the entries this block meets for the first time
                int id = ids[r0 + r];
                if (id >= raw.length || raw[id] != raw[id]) learn(id);
            }
            final double[] raw = this.raw;
            final float[] lg = this.lg;
            if (rawOut != null) for (int r = 0; r < len; r++) rawOut[r] = raw[ids[r0 + r]];
            for (int r = 0; r < len; r++) logOut[r] = lg[ids[r0 + r]];
            if (nulls) {  // a null's id is meaningless: it counts as 0
                for (int r = 0; r < len; r++) {
                    if (v.isNullAt(r0 + r)) {
                        if (rawOut != null) rawOut[r] = 0.0;
                        logOut[r] = 0f;
                    }
                }
            }
        }

        private double[] tmp = new double[0];

        private double[] scratch(int len) {
            if (tmp.length < len) tmp = new double[len];
            return tmp;
        }

        private void learn(int id) {
            if (id >= raw.length) grow(id);
            double x = decode(id);
            raw[id] = x;
            lg[id] = (float) AeBatch.log1p(x);
        }

        private void grow(int id) {
            int old = raw.length;
            raw = Arrays.copyOf(raw, Math.max(id + 1, Math.max(64, old * 2)));
            lg = Arrays.copyOf(lg, raw.length);
            Arrays.fill(raw, old, raw.length, Double.NaN);
        }
    }

    /** proto or flag: bits per row, per dictionary entry or per distinct string. */
    static final class Strings {
        private final boolean flag;
        private ColumnVector v;
        private int[] ids;
        private Dictionary dict;
        private Object dictKey;
        private int[] perId = new int[0];  // -1 = not yet
        private final Map<UTF8String, Integer> seen = new HashMap<>();

        Strings(boolean flag) {
            this.flag = flag;
        }

        void bind(ColumnVector vec, int n) {
            v = vec;
            Dictionary d = dictionary(vec);
            ids = null;
            if (d == null) return;
            dict = d;
            Object key = dictionaryKey(d);
            if (key != dictKey) {
                dictKey = key;
                Arrays.fill(perId, -1);
            }
            ids = ((WritableColumnVector) vec).getDictionaryIds().getInts(0, n);
        }

        private int bits(byte[] s) {
            return flag ? AeBatch.flagBits(s) : AeBatch.protoBits(s);
        }

        void fill(int r0, int len, int[] out) {
            final boolean nulls = v.hasNull();
            if (ids == null) {
                for (int r = 0; r < len; r++) out[r] = nulls && v.isNullAt(r0 + r) ? 0 : bitsOf(v.getUTF8String(r0 + r));
                return;
            }
            final int[] ids = this.ids;
            for (int r = 0; r < len; r++) {  // first the entries this block meets for the first time
                int id = ids[r0 + r];
                if (id >= perId.length || perId[id] < 0) learn(id);
            }
            final int[] perId = this.perId;
            for (int r = 0; r < len; r++) out[r] = perId[ids[r0 + r]];
            if (nulls) {
                for (int r = 0; r < len; r++) if (v.isNullAt(r0 + r)) out[r] = 0;
            }
        }

        private void learn(int id) {
            if (id >= perId.length) {
                int old = perId.length;
                perId = Arrays.copyOf(perId, Math.max(id + 1, Math.max(16, old * 2)));
                Arrays.fill(perId, old, perId.length, -1);
            }
            perId[id] = bits(dict.decodeToBinary(id));
        }

        /** Per distinct string (a handful of protocols, at most 64 flag sets), remembered. */
        int bitsOf(UTF8String s) {
            Integer b = seen.get(s);
            if (b == null) {
                b = bits(s.getBytes());
                if (seen.size() < 4096) seen.put(s.clone(), b);
            }
            return b;
        }
    }

    // ---- the row path ---------------------------------------------------------------------

    /** One task of any other plan: rows a block at a time -> each row + its score. */
    static final class RowTask implements FlatMapFunction<Iterator<InternalRow>, InternalRow> {
        private static final long serialVersionUID = 1L;
        private final byte[] model;
        private final int[] in, ready;

        RowTask(byte[] model, int[] in, int[] ready) {
            this.model = model;
            this.in = in;
            this.ready = ready;
        }

        @Override
        public Iterator<InternalRow> call(Iterator<InternalRow> input) {
            final AeBatch ae = new AeBatch(model);
            final Strings proto = new Strings(false), flag = new Strings(true);
            final InternalRow[] block = new InternalRow[AeBatch.BLOCK];
            final double[] scores = new double[AeBatch.BLOCK];
            final GenericInternalRow score = new GenericInternalRow(1);
            final JoinedRow joined = new JoinedRow();
            return new Iterator<InternalRow>() {
                private int len, pos;

                @Override
                public boolean hasNext() {
                    if (pos < len) return true;
                    len = 0;
                    pos = 0;
                    while (len < block.length && input.hasNext()) block[len++] = input.next().copy();  // rows are reused
                    if (len == 0) return false;
                    for (int r = 0; r < len; r++) {
                        InternalRow row = block[r];
                        ae.protoBits[r] = row.isNullAt(in[0]) ? 0 : proto.bitsOf(row.getUTF8String(in[0]));
                        ae.flagBits[r] = row.isNullAt(in[1]) ? 0 : flag.bitsOf(row.getUTF8String(in[1]));
                        ae.x[9][r] = (float) AeBatch.log1p(row.isNullAt(in[2]) ? 0 : AeBatch.count(row.getInt(in[2])));
                        ae.x[10][r] = (float) AeBatch.log1p(row.isNullAt(in[3]) ? 0 : AeBatch.count(row.getInt(in[3])));
                        ae.x[11][r] = (float) AeBatch.log1p(row.isNullAt(in[4]) ? 0 : AeBatch.count(row.getFloat(in[4])));
                        double ip = row.isNullAt(in[5]) ? 0 : AeBatch.count(row.getLong(in[5]));
                        double ib = row.isNullAt(in[6]) ? 0 : AeBatch.count(row.getLong(in[6]));
                        double op = row.isNullAt(in[7]) ? 0 : AeBatch.count(row.getLong(in[7]));
                        double ob = row.isNullAt(in[8]) ? 0 : AeBatch.count(row.getLong(in[8]));
                        ae.ipkt[r] = ip;
                        ae.ibyt[r] = ib;
                        ae.opkt[r] = op;
                        ae.obyt[r] = ob;
                        ae.x[12][r] = (float) AeBatch.log1p(ip);
                        ae.x[13][r] = (float) AeBatch.log1p(ib);
                        ae.x[14][r] = (float) AeBatch.log1p(op);
                        ae.x[15][r] = (float) AeBatch.log1p(ob);
                        for (int j = 0; j < ready.length; j++) {
                            ae.x[AeBatch.FEATURES + j][r] = row.isNullAt(ready[j]) ? Float.NaN : row.getFloat(ready[j]);
                        }
                    }
                    ae.scoreBlock(len, scores, 0);
                    return true;
                }

                @Override
                public InternalRow next() {
                    if (!hasNext()) throw new NoSuchElementException();
                    score.setDouble(0, scores[pos]);
                    return joined.apply(block[pos++], score);
                }
            };
        }
    }
}
