package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class HalfTest {

    @Test
    void everyHalfRoundTrips() {
        for (int h = 0; h < 0x10000; h++) {
            float f = Half.toFloat((short) h);
            if (Float.isNaN(f)) {
                assertTrue((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0);
                continue;
            }
            assertEquals(h, Half.fromFloat(f) & 0xffff, "half 0x" + Integer.toHexString(h));
        }
    }

    @Test
    void knownValuesAndRoundingToNearestEven() {
        assertEquals(1.0f, Half.toFloat((short) 0x3c00), 0f);
        assertEquals(65504f, Half.toFloat((short) 0x7bff), 0f);
        assertEquals((float) Math.pow(2, -24), Half.toFloat((short) 0x0001), 0f);
        assertEquals(-2.0f, Half.toFloat((short) 0xc000), 0f);
        assertEquals(0x2e66, Half.fromFloat(0.1f) & 0xffff);
        assertEquals(0x3c00, Half.fromFloat(1f + (float) Math.pow(2, -11)) & 0xffff);  // tie: to even
        assertEquals(0x3c02, Half.fromFloat(1f + 3 * (float) Math.pow(2, -11)) & 0xffff);  // tie: to even (up)
        assertEquals(0x7c00, Half.fromFloat(65520f) & 0xffff);  // rounds past the largest half: inf
        assertEquals(0x7bff, Half.fromFloat(65519f) & 0xffff);
        assertEquals(0x0000, Half.fromFloat((float) Math.pow(2, -26)) & 0xffff);  // below half the smallest
        assertEquals(0x0001, Half.fromFloat((float) Math.pow(2, -25) * 1.5f) & 0xffff);
        assertEquals(0x8000, Half.fromFloat(-0f) & 0xffff);
        assertTrue(Float.isNaN(Half.toFloat(Half.fromFloat(Float.NaN))));
    }
}
