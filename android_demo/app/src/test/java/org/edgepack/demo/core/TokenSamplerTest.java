package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.HashSet;
import java.util.Set;

import org.junit.jupiter.api.Test;

class TokenSamplerTest {

    @Test
    void greedyIsTheFirstLargestAndIgnoresPaddingAndNan() {
        assertEquals(1, TokenSampler.greedy(4).sample(new float[] {1, 3, 3, 2}));
        assertEquals(2, TokenSampler.greedy(4).sample(new float[] {Float.NaN, 1, 5, 2}));
        assertEquals(0, TokenSampler.greedy(3).sample(new float[] {2, 1, 0, 99, 99}));  // ids past the vocabulary
    }

    @Test
    void topKOneAndTinyTopPAreGreedy() {
        float[] x = {0.5f, 2.0f, 1.9f, -1f, 1.99f};
        for (long seed = 0; seed < 50; seed++) {
            assertEquals(1, new TokenSampler(1.0, 1, 1.0, 1.0, seed, 5).sample(x));
            assertEquals(1, new TokenSampler(1.0, 0, 1e-9, 1.0, seed, 5).sample(x));
        }
    }

    @Test
    void drawsOnlyFromTheTopKAndRepeatsWithASeed() {
        float[] x = {0f, 3f, 0.2f, 2.9f, 0.1f};
        Set<Integer> seen = new HashSet<Integer>();
        TokenSampler a = new TokenSampler(1.0, 2, 1.0, 1.0, 7, 5), b = new TokenSampler(1.0, 2, 1.0, 1.0, 7, 5);
        for (int i = 0; i < 400; i++) {
            int t = a.sample(x);
            assertEquals(t, b.sample(x));
            seen.add(t);
        }
        assertEquals(new HashSet<Integer>(java.util.Arrays.asList(1, 3)), seen);
    }

    @Test
    void topPKeepsTheSmallestPrefixReachingP() {
        // probabilities at temperature 1: ~0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps the first two
        float[] x = {3f, 2f, 1f, 0f};
        Set<Integer> seen = new HashSet<Integer>();
        TokenSampler s = new TokenSampler(1.0, 0, 0.8, 1.0, 3, 4);
        for (int i = 0; i < 400; i++) {
            seen.add(s.sample(x));
        }
        assertEquals(new HashSet<Integer>(java.util.Arrays.asList(0, 1)), seen);
    }

    @Test
    void repetitionPenaltyDividesPositiveAndMultipliesNegativeLogits() {
        TokenSampler s = new TokenSampler(0, 0, 1.0, 2.0, 0, 3);
        s.observe(new int[] {0, 2, 99});
        assertEquals(1, s.sample(new float[] {3f, 2f, -1f}));  // 3 / 2 = 1.5 < 2
        TokenSampler t = new TokenSampler(0, 0, 1.0, 2.0, 0, 3);
        t.observe(new int[] {1});
        assertEquals(2, t.sample(new float[] {-3f, -0.6f, -1f}));  // -0.6 * 2 = -1.2 < -1
    }

    @Test
    void refusesBadSettings() {
        double[][] bad = {{-1, 0, 1, 1}, {1, -1, 1, 1}, {1, 0, 0, 1}, {1, 0, 1.5, 1}, {1, 0, 1, 0}, {Double.NaN, 0, 1, 1}};
        String[] words = {"temperature", "top_k", "top_p", "top_p", "repetition_penalty", "temperature"};
        for (int i = 0; i < bad.length; i++) {
            try {
                new TokenSampler(bad[i][0], (int) bad[i][1], bad[i][2], bad[i][3], 0, 3);
                fail("accepted " + java.util.Arrays.toString(bad[i]));
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage().contains(words[i]), e.getMessage());
            }
        }
    }
}
