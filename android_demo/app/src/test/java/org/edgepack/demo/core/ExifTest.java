package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.ByteArrayOutputStream;
import java.util.Random;

import org.junit.jupiter.api.Test;

/** Exif.orientation on hand-built JPEG and PNG heads. */
class ExifTest {

    /** A TIFF structure with IFD0 holding the given (tag, type, value) entries. */
    static byte[] tiff(boolean big, int[][] entries) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        if (big) {
            b.write('M');
            b.write('M');
        } else {
            b.write('I');
            b.write('I');
        }
        u16(b, 42, big);
        u32(b, 8, big);
        u16(b, entries.length, big);
        for (int[] e : entries) {
            u16(b, e[0], big);
            u16(b, e[1], big);
            u32(b, 1, big);
            if (e[1] == 3) {
                u16(b, e[2], big);
                u16(b, 0, big);
            } else {
                u32(b, e[2], big);
            }
        }
        u32(b, 0, big);  // no next IFD
        return b.toByteArray();
    }

    static byte[] jpeg(byte[] tiff) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        b.write(0xFF);
        b.write(0xD8);
        byte[] jfif = {'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0};
        segment(b, 0xE0, jfif);
        byte[] app1 = new byte[6 + tiff.length];
        System.arraycopy(new byte[] {'E', 'x', 'i', 'f', 0, 0}, 0, app1, 0, 6);
        System.arraycopy(tiff, 0, app1, 6, tiff.length);
        segment(b, 0xE1, app1);
        segment(b, 0xDB, new byte[65]);  // a quantization table, then the scan
        b.write(0xFF);
        b.write(0xDA);
        return b.toByteArray();
    }

    static byte[] png(byte[] exif) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        byte[] sig = {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        b.write(sig, 0, sig.length);
        chunk(b, "IHDR", new byte[13]);
        chunk(b, "eXIf", exif);
        chunk(b, "IDAT", new byte[4]);
        return b.toByteArray();
    }

    private static final int[][] CAMERA = {{0x010F, 2, 0}, {0x0110, 2, 0}};

    private static int[][] with(int type, int value) {
        return new int[][] {CAMERA[0], CAMERA[1], {0x0112, type, value}, {0x011A, 5, 0}};
    }

    @Test
    void readsLittleAndBigEndianJpeg() {
        for (int o = 1; o <= 8; o++) {
            assertEquals(o, Exif.orientation(jpeg(tiff(false, with(3, o)))), "II orientation " + o);
            assertEquals(o, Exif.orientation(jpeg(tiff(true, with(3, o)))), "MM orientation " + o);
        }
    }

    @Test
    void readsPngExif() {
        assertEquals(6, Exif.orientation(png(tiff(false, with(3, 6)))));
        assertEquals(3, Exif.orientation(png(tiff(true, with(3, 3)))));
    }

    static byte[] webp(byte[] exif) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        b.write('R');
        b.write('I');
        b.write('F');
        b.write('F');
        u32(b, 0, false);
        b.write('W');
        b.write('E');
        b.write('B');
        b.write('P');
        riff(b, "VP8L", new byte[5]);  // odd: padded
        riff(b, "EXIF", exif);
        return b.toByteArray();
    }

    private static void riff(ByteArrayOutputStream b, String type, byte[] data) {
        for (int i = 0; i < 4; i++) {
            b.write(type.charAt(i));
        }
        u32(b, data.length, false);
        b.write(data, 0, data.length);
        if (data.length % 2 == 1) {
            b.write(0);
        }
    }

    @Test
    void readsWebpExif() {
        assertEquals(8, Exif.orientation(webp(tiff(true, with(3, 8)))));
        assertEquals(5, Exif.orientation(webp(tiff(false, with(3, 5)))));
        byte[] w = webp(tiff(false, with(3, 5)));
        byte[] head = new byte[30];  // the EXIF chunk is past the head
        System.arraycopy(w, 0, head, 0, head.length);
        assertEquals(1, Exif.orientation(head));
    }

    @Test
    void oneWithoutTheTag() {
        assertEquals(1, Exif.orientation(jpeg(tiff(false, CAMERA))));
        assertEquals(1, Exif.orientation(jpeg(tiff(true, new int[0][]))));
        assertEquals(1, Exif.orientation(new byte[] {(byte) 0xFF, (byte) 0xD8, (byte) 0xFF, (byte) 0xDA, 0, 2}));
        assertEquals(1, Exif.orientation(new byte[0]));
        assertEquals(1, Exif.orientation(null));
        assertEquals(1, Exif.orientation("GIF89a not a jpeg at all".getBytes()));
    }

    @Test
    void oneForValuesOutsideOneToEight() {
        assertEquals(1, Exif.orientation(jpeg(tiff(false, with(3, 0)))));
        assertEquals(1, Exif.orientation(jpeg(tiff(false, with(3, 9)))));
        assertEquals(1, Exif.orientation(jpeg(tiff(true, with(3, 0xFFFF)))));
    }

    @Test
    void neverThrowsOnTruncatedOrCorruptHeads() {
        byte[] good = jpeg(tiff(true, with(3, 6)));
        for (int n = 0; n < good.length; n++) {
            byte[] cut = new byte[n];
            System.arraycopy(good, 0, cut, 0, n);
            int o = Exif.orientation(cut);
            assertEquals(true, o == 1 || o == 6, "prefix of " + n + " bytes gave " + o);
        }
        Random r = new Random(33);
        for (int t = 0; t < 2000; t++) {
            byte[] bad = good.clone();
            bad[2 + r.nextInt(bad.length - 2)] = (byte) r.nextInt(256);
            bad[2 + r.nextInt(bad.length - 2)] = (byte) r.nextInt(256);
            int o = Exif.orientation(bad);
            assertEquals(true, o >= 1 && o <= 8, "corrupted head gave " + o);
        }
        // an IFD offset pointing far outside the segment
        byte[] t = tiff(false, with(3, 6));
        t[4] = (byte) 0xF0;
        t[7] = (byte) 0x7F;
        assertEquals(1, Exif.orientation(jpeg(t)));
    }

    private static void segment(ByteArrayOutputStream b, int marker, byte[] data) {
        b.write(0xFF);
        b.write(marker);
        u16(b, data.length + 2, true);
        b.write(data, 0, data.length);
    }

    private static void chunk(ByteArrayOutputStream b, String type, byte[] data) {
        u32(b, data.length, true);
        for (int i = 0; i < 4; i++) {
            b.write(type.charAt(i));
        }
        b.write(data, 0, data.length);
        u32(b, 0, true);  // CRC: not checked by a reader of the head
    }

    private static void u16(ByteArrayOutputStream b, int v, boolean big) {
        if (big) {
            b.write(v >> 8);
            b.write(v);
        } else {
            b.write(v);
            b.write(v >> 8);
        }
    }

    private static void u32(ByteArrayOutputStream b, int v, boolean big) {
        if (big) {
            u16(b, v >>> 16, true);
            u16(b, v & 0xffff, true);
        } else {
            u16(b, v & 0xffff, false);
            u16(b, v >>> 16, false);
        }
    }
}
