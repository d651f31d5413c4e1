package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import org.junit.jupiter.api.Test;

/** ImageLimits words its refusals as edgepack.model.image.read_image does (also checked on fixtures). */
class ImageLimitsTest {

    private static ArtifactException refused(String name, int w, int h) {
        try {
            if (name == null) {
                ImageLimits.check(w, h);
            } else {
                ImageLimits.check(name, w, h);
            }
        } catch (ArtifactException e) {
            return e;
        }
        fail(w + "x" + h + " was accepted");
        return null;
    }

    private static String refusal(int w, int h) {
        return refused(null, w, h).getMessage();
    }

    @Test
    void refusesTooManyPixelsBeforeDecoding() throws ArtifactException {
        assertEquals("refused before decoding: 8001x8000 is 64 Mpx, more than the 64 Mpx limit", refusal(8001, 8000));
        ImageLimits.check(8000, 8000);  // exactly 64 Mpx is allowed
        // Python's :.0f rounds half to even: 64.5 -> 64, 65.5 -> 66
        assertEquals("refused before decoding: 6450x10000 is 64 Mpx, more than the 64 Mpx limit", refusal(6450, 10000));
        assertEquals("refused before decoding: 6550x10000 is 66 Mpx, more than the 64 Mpx limit", refusal(6550, 10000));
        assertEquals("refused before decoding: 65536x65536 is 4295 Mpx, more than the 64 Mpx limit",
                refusal(65536, 65536));
    }

    @Test
    void refusesTinyPictures() throws ArtifactException {
        assertEquals("1x1 is too small to describe (at least 2x2 pixels)", refusal(1, 1));
        assertEquals("4000x1 is too small to describe (at least 2x2 pixels)", refusal(4000, 1));
        ImageLimits.check(2, 2);
    }

    @Test
    void namesTheFileAndTheKind() {
        ArtifactException e = refused("cat.jpg", 0, 5);
        assertEquals("cat.jpg: 0x5 is too small to describe (at least 2x2 pixels)", e.getMessage());
        assertEquals(ArtifactException.Kind.BAD_IMAGE, e.kind);
    }
}
