package spotae;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * An autoencoder's score of a block of flows at a time: the 18 features of
 * spot_ae_job/features.py (plus any inputs the source supplies ready-made after them, the
 * ae-context model's host context), the scaling and the forward pass, column by column.
 *
 * Why blocks and columns: a score is ~430 multiply-adds and 12 tanh per flow; done one flow at
 * a time (the former row UDF) that is scalar code, ~0.6 us of CPU per flow. Over a block of
 * rows held feature-major (one float[] per feature, one per hidden unit) every step is a loop
 * over contiguous arrays that the JIT turns into SIMD instructions, and a block's inputs come
 * straight from Spark's column vectors (AeScore). The numpy scorer (score.py) stays the
 * definition: tests/unit/test_score_jvm.py holds this class to it on real flows.
 *
 * Arithmetic follows numpy's float32 path: a feature is float32 of log1p (computed in double),
 * then scaling and the forward pass in float32 (fused multiply-adds). tanh is the rational
 * approximation Eigen uses for float32 (what TensorFlow, hence Keras, computes), accurate to a
 * few float32 ulps, because Math.tanh and Math.exp are calls the JIT cannot vectorize.
 *
 * Not thread-safe: one instance per task (its arrays are the task's scratch space).
 */
final class AeBatch {
    static final int FEATURES = 18;  // computed here from the flow's columns; inputs past them come ready-made
    static final int BLOCK = 256;  // rows per pass: the block's arrays (~40 kB) stay in L1/L2

    final int nIn;
    private final int nHid;
    private final float[] scale, offset;  // float32, as the numpy scorer scales
    private final float[] w1, b1, w2, b2;  // w1[i * nHid + j], w2[j * nIn + k]

    // Per block: the inputs a source fills, then the features, hidden units, reconstruction.
    final int[] protoBits = new int[BLOCK], flagBits = new int[BLOCK];
    final double[] ipkt = new double[BLOCK], ibyt = new double[BLOCK], opkt = new double[BLOCK], obyt = new double[BLOCK];
    final float[][] x;  // x[9..15] (log1p of the counts) and x[18..] (ready-made inputs) are filled by the source
    private final float[][] h;
    private final float[] o = new float[BLOCK], err = new float[BLOCK];

    /** The model as score.jvm_weights writes it: little-endian doubles nIn, nHid, scale[nIn],
     * offset[nIn], w1[nIn*nHid], b1[nHid], w2[nHid*nIn], b2[nIn]. */
    AeBatch(byte[] blob) {
        ByteBuffer b = ByteBuffer.wrap(blob).order(ByteOrder.LITTLE_ENDIAN);
        nIn = (int) b.getDouble();
        nHid = (int) b.getDouble();
        if (nIn < FEATURES || nHid <= 0 || blob.length != 8 * (2 + 3 * nIn + 2 * nIn * nHid + nHid)) {
            throw new IllegalArgumentException("spot-ae model blob does not hold an n-k-n autoencoder with n >= 18");
        }
        x = new float[nIn][BLOCK];
        scale = floats(b, nIn);
        offset = floats(b, nIn);
        w1 = floats(b, nIn * nHid);
        b1 = floats(b, nHid);
        w2 = floats(b, nHid * nIn);
        b2 = floats(b, nIn);
        h = new float[nHid][BLOCK];
    }

    private static float[] floats(ByteBuffer b, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) b.getDouble();  // float32 values carried as doubles
        return a;
    }

    // ---- the per-value rules of features.feature_matrix ------------------------------------

    /** A missing, NaN or negative count is 0 and an infinite one the largest double, as numpy's
     * nan_to_num + maximum(0) make them (callers map a missing value to 0 themselves). */
    static double count(double d) {
        if (d == Double.POSITIVE_INFINITY) return Double.MAX_VALUE;
        return d > 0.0 ? d : 0.0;
    }

    /** log(1 + v) of every integer below 2^16 (ports always, packet and byte counts mostly),
     * computed once: a table read instead of a logarithm. */
    private static final double[] LOG1P_INT = new double[1 << 16];
    static {
        for (int i = 0; i < LOG1P_INT.length; i++) LOG1P_INT[i] = Math.log1p(i);
    }

    /** log(1 + v) for v >= 0 (a count): Math.log(1 + v) off the table, a JIT intrinsic where
     * Math.log1p is a native call; for these inputs they agree to ~1e-16. */
    static double log1p(double v) {
        if (v < LOG1P_INT.length) {
            int i = (int) v;
            if (i == v) return LOG1P_INT[i];
        }
        return Math.log(1.0 + v);
    }

    /** proto -> bit 0 TCP, bit 1 UDP, bit 2 ICMP/ICMP6 (features 1-3), case-insensitive as
     * `proto.upper()`; null or anything else: none. */
    static int protoBits(byte[] p) {
        if (p == null) return 0;
        if (is(p, "TCP")) return 1;
        if (is(p, "UDP")) return 2;
        return is(p, "ICMP") || is(p, "ICMP6") ? 4 : 0;
    }

    private static boolean is(byte[] p, String name) {
        if (p.length != name.length()) return false;
        for (int i = 0; i < p.length; i++) {
            int c = p[i];
            if (c >= 'a' && c <= 'z') c -= 32;
            if (c != name.charAt(i)) return false;
        }
        return true;
    }

    /** nfdump's flag string -> bits F S R P A U (features 4-9): a letter present anywhere. */
    static int flagBits(byte[] f) {
        if (f == null) return 0;
        int bits = 0;
        for (byte c : f) {
            switch (c) {
                case 'F': bits |= 1; break;
                case 'S': bits |= 2; break;
                case 'R': bits |= 4; break;
                case 'P': bits |= 8; break;
                case 'A': bits |= 16; break;
                case 'U': bits |= 32; break;
                default:
            }
        }
        return bits;
    }

    // ---- one block: a source has filled protoBits, flagBits, x[9..15], x[18..] and the raw counts ----

    /** The scores of the block's first `len` rows into out[off..off+len). Every step is a loop
     * over one row range of separate arrays, the shape the JIT vectorizes. */
    void scoreBlock(int len, double[] out, int off) {
        final float[][] x = this.x, h = this.h;
        for (int k = 0; k < 3; k++) bit(x[k], protoBits, k, len);
        for (int k = 0; k < 6; k++) bit(x[3 + k], flagBits, k, len);
        perPacket(x[16], ibyt, ipkt, len);
        perPacket(x[17], obyt, opkt, len);
        final int n = nIn;
        for (int k = 0; k < n; k++) {
            final float sc = scale[k], of = offset[k];
            final float[] xk = x[k];
            for (int r = 0; r < len; r++) xk[r] = xk[r] * sc + of;
        }
        final int m = nHid;
        for (int j = 0; j < m; j++) {
            final float[] hj = h[j];
            Arrays.fill(hj, 0, len, b1[j]);
            dot(hj, x, w1, j, m, n, len);
            tanh(hj, len);
        }
        final float[] o = this.o, err = this.err;
        Arrays.fill(err, 0, len, 0f);
        for (int k = 0; k < n; k++) {
            final float bk = b2[k];
            final float[] xk = x[k];
            for (int r = 0; r < len; r++) o[r] = bk - xk[r];
            dot(o, h, w2, k, n, m, len);
            for (int r = 0; r < len; r++) err[r] = Math.fma(o[r], o[r], err[r]);
        }
        final double mean = 1.0 / n;
        for (int r = 0; r < len; r++) out[off + r] = err[r] * mean;
    }

    private static void bit(float[] dst, int[] bits, int k, int len) {
        for (int r = 0; r < len; r++) dst[r] = (bits[r] >> k) & 1;
    }

    /** float32 of log(1 + bytes / max(packets, 1)). With integer counts that fit the table it
     * is log(packets + bytes) - log(packets), two table reads instead of a logarithm (equal to
     * ~1e-15, far below float32's resolution). */
    private static void perPacket(float[] dst, double[] bytes, double[] packets, int len) {
        final double[] t = LOG1P_INT;
        for (int r = 0; r < len; r++) {
            double p = Math.max(packets[r], 1.0), b = bytes[r], s = p + b;
            int ip = (int) p, is = (int) s;
            dst[r] = (float) (s < t.length && is == s && ip == p ? t[is - 1] - t[ip - 1] : Math.log(1.0 + b / p));
        }
    }

    /** y += sum over i of a[i] * w[i * stride + col], fused multiply-adds in order of i, four
     * inputs per pass over y: fewer loads and stores of y per multiply-add (measured: passes of
     * 3 or 5 inputs are slower, of 6 not vectorized at all). Java never fuses a * b + c by
     * itself; Math.fma does, and the JIT vectorizes it like the plain form.
     * Each pass is a loop over separate arrays with no offsets, which the JIT vectorizes. */
    private static void dot(float[] y, float[][] a, float[] w, int col, int stride, int n, int len) {
        int i = 0;
        for (; i + 4 <= n; i += 4) {
            final float[] a0 = a[i], a1 = a[i + 1], a2 = a[i + 2], a3 = a[i + 3];
            final float w0 = w[i * stride + col], v1 = w[(i + 1) * stride + col], v2 = w[(i + 2) * stride + col],
                v3 = w[(i + 3) * stride + col];
            for (int r = 0; r < len; r++) y[r] = Math.fma(a3[r], v3, Math.fma(a2[r], v2, Math.fma(a1[r], v1, Math.fma(a0[r], w0, y[r]))));
        }
        for (; i < n; i++) {
            final float[] ai = a[i];
            final float wi = w[i * stride + col];
            for (int r = 0; r < len; r++) y[r] = Math.fma(ai[r], wi, y[r]);
        }
    }

    /** In-place tanh, Eigen's float32 rational approximation (clamped at +-7.905, where float32
     * tanh is +-1); only multiplies, adds, one divide and min/max: vectorizable. */
    private static void tanh(float[] v, int len) {
        for (int r = 0; r < len; r++) {
            float t = Math.max(-7.90531110763549805f, Math.min(7.90531110763549805f, v[r]));
            float t2 = t * t;
            float p = Math.fma(t2, -2.76076847742355e-16f, 2.00018790482477e-13f);
            p = Math.fma(p, t2, -8.60467152213735e-11f);
            p = Math.fma(p, t2, 5.12229709037114e-08f);
            p = Math.fma(p, t2, 1.48572235717979e-05f);
            p = Math.fma(p, t2, 6.37261928875436e-04f);
            p = Math.fma(p, t2, 4.89352455891786e-03f);
            float q = Math.fma(t2, 1.19825839466702e-06f, 1.18534705686654e-04f);
            q = Math.fma(q, t2, 2.26843463243900e-03f);
            q = Math.fma(q, t2, 4.89352518554385e-03f);
            v[r] = t * p / q;
        }
    }
}
