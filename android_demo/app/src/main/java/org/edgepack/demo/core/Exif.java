package org.edgepack.demo.core;

/**
 * The EXIF orientation tag (0x0112) of a picture, from the first bytes of its file: a JPEG's first
 * "Exif" APP1 segment, a PNG's eXIf chunk or a WebP's EXIF chunk, as Pillow's getexif() reads them (a WebP
 * keeps EXIF after the pixels: give the whole file, or the tag is not found). 1 (as stored) when there
 * is no tag, the value is not 1..8 or the bytes cannot be read; it never throws.
 */
public final class Exif {

    private static final int ORIENTATION = 0x0112;

    private Exif() {
    }

    public static int orientation(byte[] head) {
        try {
            int v = find(head);
            return v >= 1 && v <= 8 ? v : 1;
        } catch (RuntimeException e) {  // any malformed offset: treated as no tag
            return 1;
        }
    }

    private static int find(byte[] b) {
        if (b == null) {
            return 1;
        }
        if (b.length >= 4 && u8(b, 0) == 0xFF && u8(b, 1) == 0xD8) {
            return jpeg(b);
        }
        if (b.length >= 8 && u8(b, 0) == 0x89 && b[1] == 'P' && b[2] == 'N' && b[3] == 'G') {
            return png(b);
        }
        if (b.length >= 12 && b[0] == 'R' && b[1] == 'I' && b[2] == 'F' && b[3] == 'F' && b[8] == 'W'
                && b[9] == 'E' && b[10] == 'B' && b[11] == 'P') {
            return webp(b);
        }
        return 1;
    }

    private static int jpeg(byte[] b) {
        int i = 2;
        while (i + 4 <= b.length) {
            if (u8(b, i) != 0xFF) {
                return 1;
            }
            int marker = u8(b, i + 1);
            if (marker == 0xFF) {  // fill byte before a marker
                i++;
                continue;
            }
            if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {
                i += 2;  // markers without a length
                continue;
            }
            if (marker == 0xDA || marker == 0xD9) {  // start of scan / end of image: no more headers
                return 1;
            }
            int len = (u8(b, i + 2) << 8) | u8(b, i + 3);
            if (len < 2) {
                return 1;
            }
            int data = i + 4, n = len - 2;
            if (marker == 0xE1 && n >= 6 && data + 6 <= b.length && b[data] == 'E' && b[data + 1] == 'x'
                    && b[data + 2] == 'i' && b[data + 3] == 'f' && b[data + 4] == 0 && b[data + 5] == 0) {
                return tiff(b, data + 6, Math.min(b.length, data + n));
            }
            i = data + n;
        }
        return 1;
    }

    private static int png(byte[] b) {
        int i = 8;
        while (i + 8 <= b.length) {
            long len = u32(b, i, true);
            String type = new String(new char[] {(char) b[i + 4], (char) b[i + 5], (char) b[i + 6], (char) b[i + 7]});
            int data = i + 8;
            if (type.equals("eXIf")) {
                int end = (int) Math.min(b.length, data + len);
                if (end - data >= 6 && b[data] == 'E' && b[data + 1] == 'x' && b[data + 2] == 'i'
                        && b[data + 3] == 'f' && b[data + 4] == 0 && b[data + 5] == 0) {
                    data += 6;  // some writers keep JPEG's prefix
                }
                return tiff(b, data, end);
            }
            if (type.equals("IDAT") || type.equals("IEND") || len > b.length) {
                return 1;  // Pillow reads eXIf after IDAT only when it decodes; the head holds what comes first
            }
            i = data + (int) len + 4;
        }
        return 1;
    }

    private static int webp(byte[] b) {
        int i = 12;
        while (i + 8 <= b.length) {
            long len = u32(b, i + 4, false);
            int data = i + 8;
            if (b[i] == 'E' && b[i + 1] == 'X' && b[i + 2] == 'I' && b[i + 3] == 'F') {
                int end = (int) Math.min(b.length, data + len);
                if (end - data >= 6 && b[data] == 'E' && b[data + 1] == 'x' && b[data + 2] == 'i'
                        && b[data + 3] == 'f' && b[data + 4] == 0 && b[data + 5] == 0) {
                    data += 6;
                }
                return tiff(b, data, end);
            }
            if (len > b.length) {
                return 1;
            }
            i = data + (int) len + (int) (len & 1);  // chunks are padded to an even size
        }
        return 1;
    }

    /** IFD0's orientation in the TIFF structure at b[start, end). */
    private static int tiff(byte[] b, int start, int end) {
        if (end - start < 8) {
            return 1;
        }
        boolean big;
        if (b[start] == 'M' && b[start + 1] == 'M') {
            big = true;
        } else if (b[start] == 'I' && b[start + 1] == 'I') {
            big = false;
        } else {
            return 1;
        }
        if (u16(b, start + 2, big) != 42) {
            return 1;
        }
        long ifd = u32(b, start + 4, big);
        if (ifd < 8 || start + ifd + 2 > end) {
            return 1;
        }
        int p = (int) (start + ifd);
        int count = u16(b, p, big);
        p += 2;
        for (int k = 0; k < count && p + 12 <= end; k++, p += 12) {
            if (u16(b, p, big) != ORIENTATION) {
                continue;
            }
            int type = u16(b, p + 2, big);
            long n = u32(b, p + 4, big);
            if (n < 1) {
                return 1;
            }
            if (type == 3) {  // SHORT
                return u16(b, p + 8, big);
            }
            if (type == 4 || type == 9) {  // LONG / SLONG
                long v = u32(b, p + 8, big);
                return v >= 1 && v <= 8 ? (int) v : 1;
            }
            if (type == 1 || type == 6 || type == 7) {  // BYTE / SBYTE / UNDEFINED
                return u8(b, p + 8);
            }
            return 1;
        }
        return 1;
    }

    private static int u8(byte[] b, int i) {
        return b[i] & 0xff;
    }

    private static int u16(byte[] b, int i, boolean big) {
        return big ? (u8(b, i) << 8) | u8(b, i + 1) : (u8(b, i + 1) << 8) | u8(b, i);
    }

    private static long u32(byte[] b, int i, boolean big) {
        return big ? ((long) u16(b, i, true) << 16) | u16(b, i + 2, true)
                : ((long) u16(b, i + 2, false) << 16) | u16(b, i, false);
    }
}
