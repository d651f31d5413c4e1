package org.edgepack.demo.core;

import java.math.BigDecimal;
import java.math.RoundingMode;

/**
 * The picture sizes edgepack.model.image.read_image accepts (MAX_PIXELS, MIN_SIDE), checked from the
 * header's size before any pixel is decoded, with the same one-line messages.
 */
public final class ImageLimits {

    public static final long MAX_PIXELS = 64_000_000L;
    public static final int MIN_SIDE = 2;

    private ImageLimits() {
    }

    /** The message of image.py without its "PATH: " prefix. */
    public static void check(int w, int h) throws ArtifactException {
        String why = problem(w, h);
        if (why != null) {
            throw new ArtifactException(ArtifactException.Kind.BAD_IMAGE, why);
        }
    }

    /** As image.py words it for a file: "NAME: refused before decoding: ...". */
    public static void check(String name, int w, int h) throws ArtifactException {
        String why = problem(w, h);
        if (why != null) {
            throw new ArtifactException(ArtifactException.Kind.BAD_IMAGE, name + ": " + why);
        }
    }

    private static String problem(int w, int h) {
        long px = (long) w * h;
        if (px > MAX_PIXELS) {
            return "refused before decoding: " + w + "x" + h + " is " + mpx(px) + " Mpx, more than the "
                    + mpx(MAX_PIXELS) + " Mpx limit";
        }
        if (Math.min(w, h) < MIN_SIDE) {
            return w + "x" + h + " is too small to describe (at least " + MIN_SIDE + "x" + MIN_SIDE + " pixels)";
        }
        return null;
    }

    /** Python's f"{px / 1e6:.0f}": the double's exact value rounded half to even. */
    static String mpx(long px) {
        return new BigDecimal(px / 1e6).setScale(0, RoundingMode.HALF_EVEN).toPlainString();
    }
}
