package org.edgepack.demo.core;

import java.util.Arrays;
import java.util.Random;

/**
 * The next token from logits, as edgepack/runtime/sampler.py: repetition penalty, temperature,
 * top-k, top-p, draw, in Hugging Face's order. Temperature 0 is greedy: the argmax, the first index
 * on ties (numpy's argmax, onnxruntime-genai and llama.cpp). The draw uses java.util.Random seeded
 * by the seed (numpy's PCG64 stream is not reproduced, so a seeded sampled answer is reproducible
 * here but not the Python runtime's; greedy answers are the same tokens).
 */
public final class TokenSampler {

    public final double temperature, topP, repetitionPenalty;
    public final int topK;
    private final int vocabSize;
    private final Random rng;
    private final boolean[] seen;

    /** seed &lt; 0: a fresh random seed. */
    public TokenSampler(double temperature, int topK, double topP, double repetitionPenalty, long seed, int vocabSize) {
        if (!(temperature >= 0) || Double.isInfinite(temperature)) {
            throw new IllegalArgumentException("temperature must be a number >= 0 (0 = greedy), got " + temperature);
        }
        if (topK < 0) {
            throw new IllegalArgumentException("top_k must be an integer >= 0 (0 = no limit), got " + topK);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("top_p must be in (0, 1], got " + topP);
        }
        if (!(repetitionPenalty > 0) || Double.isInfinite(repetitionPenalty)) {
            throw new IllegalArgumentException("repetition_penalty must be a number > 0 (1 = off), got " + repetitionPenalty);
        }
        this.temperature = temperature;
        this.topK = topK;
        this.topP = topP;
        this.repetitionPenalty = repetitionPenalty;
        this.vocabSize = vocabSize;
        this.rng = seed < 0 ? new Random() : new Random(seed);
        this.seen = new boolean[vocabSize];
    }

    public static TokenSampler greedy(int vocabSize) {
        return new TokenSampler(0, 0, 1, 1, 0, vocabSize);
    }

    /** Records tokens for the repetition penalty (prompt and generated; ids outside the vocabulary ignored). */
    public void observe(int[] ids) {
        for (int id : ids) {
            if (id >= 0 && id < vocabSize) {
                seen[id] = true;
            }
        }
    }

    /** logits: at least vocabSize values (a graph may pad the vocabulary; the padding is ignored). */
    public int sample(float[] logits) {
        int n = Math.min(vocabSize, logits.length);
        float[] x = logits;
        if (repetitionPenalty != 1.0) {
            x = Arrays.copyOf(logits, n);
            float r = (float) repetitionPenalty;
            for (int i = 0; i < n; i++) {
                if (seen[i]) {
                    x[i] = x[i] > 0 ? x[i] / r : x[i] * r;
                }
            }
        }
        if (temperature == 0) {
            return argmax(x, n);
        }
        int[] idx = new int[n];
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            idx[i] = i;
            v[i] = (double) x[i] / temperature;
        }
        int m = n;
        if (topK > 0 && topK < m) {  // the k largest, kept in id order (ties at the k-th by lowest id)
            Integer[] order = descending(v, idx, m);
            boolean[] keep = new boolean[n];
            for (int i = 0; i < topK; i++) {
                keep[order[i]] = true;
            }
            int j = 0;
            for (int i = 0; i < m; i++) {
                if (keep[i]) {
                    idx[j] = idx[i];
                    v[j++] = v[i];
                }
            }
            m = topK;
        }
        if (topP < 1.0) {  // descending, ties by position (a stable sort)
            Integer[] order = descending(v, idx, m);
            int[] idx2 = new int[m];
            double[] v2 = new double[m];
            for (int i = 0; i < m; i++) {
                idx2[i] = idx[order[i]];
                v2[i] = v[order[i]];
            }
            idx = idx2;
            v = v2;
        }
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < m; i++) {
            max = Math.max(max, v[i]);
        }
        double[] p = new double[m];
        double sum = 0;
        for (int i = 0; i < m; i++) {
            p[i] = Math.exp(v[i] - max);
            sum += p[i];
        }
        for (int i = 0; i < m; i++) {
            p[i] /= sum;
        }
        if (topP < 1.0) {  // the smallest prefix whose mass reaches top_p (at least one token)
            double c = 0;
            int keep = m;
            for (int i = 0; i < m; i++) {
                c += p[i];
                if (c >= topP) {
                    keep = i + 1;
                    break;
                }
            }
            double s = 0;
            for (int i = 0; i < keep; i++) {
                s += p[i];
            }
            for (int i = 0; i < keep; i++) {
                p[i] /= s;
            }
            m = keep;
        }
        double u = rng.nextDouble(), c = 0;
        for (int i = 0; i < m; i++) {
            c += p[i];
            if (u < c) {
                return idx[i];
            }
        }
        return idx[m - 1];
    }

    /** The first index of the largest of the first n values (NaN never wins). */
    public static int argmax(float[] x, int n) {
        int best = 0;
        for (int i = 1; i < n; i++) {
            if (x[i] > x[best] || (Float.isNaN(x[best]) && !Float.isNaN(x[i]))) {
                best = i;
            }
        }
        return best;
    }

    private static Integer[] descending(final double[] v, int[] idx, int m) {
        Integer[] order = new Integer[m];
        for (int i = 0; i < m; i++) {
            order[i] = i;
        }
        Arrays.sort(order, new java.util.Comparator<Integer>() {  // stable: ties keep position order
            @Override
            public int compare(Integer a, Integer b) {
                return Double.compare(v[b], v[a]);
            }
        });
        return order;
    }
}
