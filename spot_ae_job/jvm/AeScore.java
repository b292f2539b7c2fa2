package spotae;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.apache.spark.sql.api.java.UDF10;

/**
 * The paper model's score of one flow, inside Spark's generated code: the 18 features of
 * spot_ae_job/features.py, the scaling and the 18-12-18 forward pass, with no trip to Python.
 *
 * Why it exists: Spark 4.0 can only hand rows to Python by writing them into Arrow value by
 * value; on 2 cores that hop alone caps the Arrow scorer near 1.5 M flows/s even when Python
 * does nothing (benchmarks/bench_score.py prints it). The numpy scorer (score.py) stays the
 * definition: tests/unit/test_score_jvm.py checks this class against it on real flows.
 *
 * The last argument is the model (score.jvm_weights): doubles, little endian:
 * nIn, nHid, scale[nIn], offset[nIn], w1[nIn*nHid], b1[nHid], w2[nHid*nIn], b2[nIn].
 * It is a literal, so every row gets the same array object and it is parsed once per task.
 */
public final class AeScore implements UDF10<String, String, Integer, Integer, Float, Long, Long, Long, Long, byte[], Double> {
    private static final long serialVersionUID = 1L;
    private static final int FEATURES = 18;
    // Scratch state: Spark deserializes a UDF with each task, so one instance serves one thread.
    private transient byte[] loaded;
    private transient int nHid;
    private transient double[] scale, offset, w1, b1, w2, b2, x, h;

    private void load(byte[] blob) {
        ByteBuffer b = ByteBuffer.wrap(blob).order(ByteOrder.LITTLE_ENDIAN);
        int nIn = (int) b.getDouble();
        nHid = (int) b.getDouble();
        if (nIn != FEATURES || nHid <= 0 || blob.length != 8 * (2 + 3 * nIn + 2 * nIn * nHid + nHid)) {
            throw new IllegalArgumentException("spot-ae model blob does not hold an 18-k-18 autoencoder");
        }
        scale = read(b, nIn);
        offset = read(b, nIn);
        w1 = read(b, nIn * nHid);
        b1 = read(b, nHid);
        double[] w2rows = read(b, nHid * nIn);
        w2 = new double[nIn * nHid];  // transposed: output k's weights side by side
        for (int j = 0; j < nHid; j++) {
            for (int k = 0; k < nIn; k++) w2[k * nHid + j] = w2rows[j * nIn + k];
        }
        b2 = read(b, nIn);
        x = new double[nIn];
        h = new double[nHid];
        loaded = blob;
    }

    private static double[] read(ByteBuffer b, int n) {
        double[] a = new double[n];
        for (int i = 0; i < n; i++) a[i] = b.getDouble();
        return a;
    }

    /** A missing, NaN or negative count is 0 and an infinite one the largest double, as
     * numpy's nan_to_num + maximum(0) make them in features.feature_matrix. */
    private static double count(Number v) {
        if (v == null) return 0.0;
        double d = v.doubleValue();
        if (d == Double.POSITIVE_INFINITY) return Double.MAX_VALUE;
        return d > 0.0 ? d : 0.0;
    }

    /** log(1 + v) of every integer below 2^16 (ports always, packet and byte counts mostly),
     * computed once: a table read instead of a logarithm for 6 of the 9 log features. */
    private static final double[] LOG1P_INT = new double[1 << 16];
    static {
        for (int i = 0; i < LOG1P_INT.length; i++) LOG1P_INT[i] = Math.log1p(i);
    }

    // log(1 + v) rather than Math.log1p off the table: the former is a JIT intrinsic, the latter
    // a native call; for these inputs (counts, ports, durations >= 1 ms or 0) they agree to ~1e-16.
    private static double log1p(double v) {
        if (v < LOG1P_INT.length) {
            int i = (int) v;
            if (i == v) return LOG1P_INT[i];
        }
        return Math.log(1.0 + v);
    }

    private static double bit(boolean b) {
        return b ? 1.0 : 0.0;
    }

    @Override
    public Double call(String proto, String flag, Integer sport, Integer dport, Float tdur,
                       Long ipkt, Long ibyt, Long opkt, Long obyt, byte[] model) {
        if (model != loaded) load(model);
        final double[] x = this.x, h = this.h;
        String p = proto == null ? "" : proto;
        x[0] = bit(p.equalsIgnoreCase("TCP"));
        x[1] = bit(p.equalsIgnoreCase("UDP"));
        x[2] = bit(p.equalsIgnoreCase("ICMP") || p.equalsIgnoreCase("ICMP6"));
        String f = flag == null ? "" : flag;
        x[3] = bit(f.indexOf('F') >= 0);
        x[4] = bit(f.indexOf('S') >= 0);
        x[5] = bit(f.indexOf('R') >= 0);
        x[6] = bit(f.indexOf('P') >= 0);
        x[7] = bit(f.indexOf('A') >= 0);
        x[8] = bit(f.indexOf('U') >= 0);
        double ip = count(ipkt), ib = count(ibyt), op = count(opkt), ob = count(obyt);
        x[9] = log1p(count(sport));
        x[10] = log1p(count(dport));
        x[11] = log1p(count(tdur));
        x[12] = log1p(ip);
        x[13] = log1p(ib);
        x[14] = log1p(op);
        x[15] = log1p(ob);
        x[16] = log1p(ib / Math.max(ip, 1.0));
        x[17] = log1p(ob / Math.max(op, 1.0));
        final int n = FEATURES, m = nHid;
        for (int i = 0; i < n; i++) x[i] = x[i] * scale[i] + offset[i];
        for (int j = 0; j < m; j++) h[j] = b1[j];
        for (int i = 0; i < n; i++) {
            final double xi = x[i];
            final int row = i * m;
            for (int j = 0; j < m; j++) h[j] += xi * w1[row + j];
        }
        // tanh through exp (an intrinsic; Math.tanh is a native call): exact to rounding.
        for (int j = 0; j < m; j++) h[j] = 1.0 - 2.0 / (Math.exp(2.0 * h[j]) + 1.0);
        double err = 0.0;
        for (int k = 0; k < n; k++) {
            double o = b2[k];
            final int row = k * m;
            for (int j = 0; j < m; j++) o += h[j] * w2[row + j];
            final double d = o - x[k];
            err += d * d;
        }
        return err / n;
    }
}
