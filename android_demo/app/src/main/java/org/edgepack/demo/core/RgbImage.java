package org.edgepack.demo.core;

/**
 * A decoded picture as RGB888, row-major, 3 bytes a pixel: what MiniCPM-V's preprocessing starts from
 * (edgepack.model.image.read_image's RGB PIL image).
 */
public final class RgbImage {

    public final int width, height;
    public final byte[] rgb;

    public RgbImage(int width, int height, byte[] rgb) {
        if (width < 1 || height < 1 || rgb.length != (long) width * height * 3) {
            throw new IllegalArgumentException("RgbImage " + width + "x" + height + " needs "
                    + (long) width * height * 3 + " bytes, got " + rgb.length);
        }
        this.width = width;
        this.height = height;
        this.rgb = rgb;
    }

    /**
     * From Android's ARGB_8888 ints (not premultiplied, as Bitmap.getPixels gives them): the alpha is
     * composited over opaque white with Pillow's Image.alpha_composite integer arithmetic
     * (AlphaComposite.c), then dropped, as to_rgb does.
     */
    public static RgbImage fromArgb(int[] argb, int width, int height) {
        if (width < 1 || height < 1 || argb.length != (long) width * height) {
            throw new IllegalArgumentException("fromArgb " + width + "x" + height + " needs "
                    + (long) width * height + " pixels, got " + argb.length);
        }
        byte[] out = new byte[argb.length * 3];
        for (int i = 0; i < argb.length; i++) {
            int p = argb[i];
            int a = p >>> 24;
            int r = (p >> 16) & 0xff, g = (p >> 8) & 0xff, b = p & 0xff;
            if (a == 0) {  // Pillow copies the destination pixel: white
                r = g = b = 255;
            } else if (a != 255) {
                r = over(r, a);
                g = over(g, a);
                b = over(b, a);
            }
            out[3 * i] = (byte) r;
            out[3 * i + 1] = (byte) g;
            out[3 * i + 2] = (byte) b;
        }
        return new RgbImage(width, height, out);
    }

    /**
     * From RGBA bytes, not premultiplied (Bitmap.copyPixelsToBuffer of an ARGB_8888 bitmap decoded with
     * inPremultiplied = false: the decoded values without getPixels' conversion to sRGB, as Pillow reads
     * them), composited over white as fromArgb.
     */
    public static RgbImage fromRgba(byte[] rgba, int width, int height) {
        if (width < 1 || height < 1 || rgba.length != (long) width * height * 4) {
            throw new IllegalArgumentException("fromRgba " + width + "x" + height + " needs "
                    + (long) width * height * 4 + " bytes, got " + rgba.length);
        }
        byte[] out = new byte[width * height * 3];
        for (int i = 0, n = width * height; i < n; i++) {
            int r = rgba[4 * i] & 0xff, g = rgba[4 * i + 1] & 0xff, b = rgba[4 * i + 2] & 0xff;
            int a = rgba[4 * i + 3] & 0xff;
            if (a == 0) {
                r = g = b = 255;
            } else if (a != 255) {
                r = over(r, a);
                g = over(g, a);
                b = over(b, a);
            }
            out[3 * i] = (byte) r;
            out[3 * i + 1] = (byte) g;
            out[3 * i + 2] = (byte) b;
        }
        return new RgbImage(width, height, out);
    }

    /** One channel of src (alpha a) over opaque white, exactly as AlphaComposite.c (7 extra bits). */
    static int over(int c, int a) {
        long outa255 = a * 255L + 255L * (255 - a);           // = 255·255 over an opaque background
        long coef1 = a * 255L * 255L * 128L / outa255;
        long coef2 = 255L * 128L - coef1;
        long tmp = c * coef1 + 255L * coef2 + (0x80L << 7);
        return (int) ((((tmp >> 8) + tmp) >> 8) >> 7);
    }

    /** PIL.ImageOps.exif_transpose for EXIF orientation 1..8 (any other value: unchanged). */
    public RgbImage orient(int exifOrientation) {
        if (exifOrientation < 2 || exifOrientation > 8) {
            return this;
        }
        boolean swap = exifOrientation >= 5;
        int ow = swap ? height : width, oh = swap ? width : height;
        byte[] out = new byte[rgb.length];
        for (int y = 0; y < oh; y++) {
            for (int x = 0; x < ow; x++) {
                int sx, sy;
                switch (exifOrientation) {
                    case 2: sx = width - 1 - x; sy = y; break;                 // FLIP_LEFT_RIGHT
                    case 3: sx = width - 1 - x; sy = height - 1 - y; break;    // ROTATE_180
                    case 4: sx = x; sy = height - 1 - y; break;                // FLIP_TOP_BOTTOM
                    case 5: sx = y; sy = x; break;                             // TRANSPOSE
                    case 6: sx = y; sy = height - 1 - x; break;                // ROTATE_270 (clockwise)
                    case 7: sx = width - 1 - y; sy = height - 1 - x; break;    // TRANSVERSE
                    default: sx = width - 1 - y; sy = x; break;                // 8: ROTATE_90 (counter-clockwise)
                }
                int s = 3 * (sy * width + sx), d = 3 * (y * ow + x);
                out[d] = rgb[s];
                out[d + 1] = rgb[s + 1];
                out[d + 2] = rgb[s + 2];
            }
        }
        return new RgbImage(ow, oh, out);
    }
}
