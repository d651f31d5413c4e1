package org.edgepack.demo;

import android.content.ContentResolver;
import android.database.Cursor;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.net.Uri;
import android.provider.OpenableColumns;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.Exif;
import org.edgepack.demo.core.PictureRoute;
import org.edgepack.demo.core.RgbImage;

/**
 * A picture file or content Uri into core's RgbImage, as edgepack.model.image.read_image reads a file:
 * the header's size first (BitmapFactory inJustDecodeBounds, then PictureRoute.checkPicture: not a
 * picture, 64 Mpx+ and 1-pixel sides refused before any pixel is decoded), then ARGB_8888 pixels as
 * decoded (inPremultiplied false, copyPixelsToBuffer: no conversion to sRGB, as Pillow reads them;
 * alpha over white in RgbImage.fromRgba), then the EXIF orientation read by core's Exif from the
 * stream's first 64 KiB (BitmapFactory itself ignores it) and applied.
 */
final class PictureDecoder {

    static final int HEAD_BYTES = 65536;

    /** Something that opens a fresh stream of the picture's bytes each time (it is read three times). */
    interface Source {
        InputStream open() throws IOException;

        String name();
    }

    private PictureDecoder() {
    }

    static Source of(final File file) {
        return new Source() {
            @Override
            public InputStream open() throws IOException {
                return new FileInputStream(file);
            }

            @Override
            public String name() {
                return file.getName();
            }
        };
    }

    /** A picture the system picker returned; its name from OpenableColumns.DISPLAY_NAME when the provider has one. */
    static Source of(final ContentResolver resolver, final Uri uri) {
        String name = uri.getLastPathSegment();
        Cursor c = null;
        try {
            c = resolver.query(uri, new String[] {OpenableColumns.DISPLAY_NAME}, null, null, null);
            if (c != null && c.moveToFirst() && !c.isNull(0)) {
                name = c.getString(0);
            }
        } catch (RuntimeException e) {
            // a provider without the column: keep the Uri's last segment
        } finally {
            if (c != null) {
                c.close();
            }
        }
        final String shown = name == null ? "the picture" : name;
        return new Source() {
            @Override
            public InputStream open() throws IOException {
                InputStream in = resolver.openInputStream(uri);
                if (in == null) {
                    throw new IOException("the provider gave no stream for " + uri);
                }
                return in;
            }

            @Override
            public String name() {
                return shown;
            }
        };
    }

    /** The picture, upright, as RGB bytes; ArtifactException (BAD_IMAGE) with one line for what cannot be used. */
    static RgbImage read(Source source) throws ArtifactException, IOException {
        BitmapFactory.Options bounds = new BitmapFactory.Options();
        bounds.inJustDecodeBounds = true;
        InputStream in = source.open();
        try {
            BitmapFactory.decodeStream(in, null, bounds);
        } finally {
            in.close();
        }
        PictureRoute.checkPicture(source.name(), bounds.outWidth, bounds.outHeight);

        BitmapFactory.Options pixels = new BitmapFactory.Options();
        pixels.inPreferredConfig = Bitmap.Config.ARGB_8888;
        pixels.inScaled = false;
        pixels.inPremultiplied = false;
        Bitmap bitmap;
        in = source.open();
        try {
            bitmap = BitmapFactory.decodeStream(in, null, pixels);
        } finally {
            in.close();
        }
        if (bitmap == null) {
            throw new ArtifactException(ArtifactException.Kind.BAD_IMAGE, PictureRoute.undecodable(source.name()));
        }
        int w = bitmap.getWidth(), h = bitmap.getHeight();
        RgbImage image;
        if (bitmap.getConfig() == Bitmap.Config.ARGB_8888) {
            java.nio.ByteBuffer rgba = java.nio.ByteBuffer.allocate(w * h * 4);  // R, G, B, A bytes per pixel
            bitmap.copyPixelsToBuffer(rgba);
            bitmap.recycle();
            image = RgbImage.fromRgba(rgba.array(), w, h);
        } else {  // a decoder that would not give 8 bits per channel: the sRGB ARGB ints
            int[] argb = new int[w * h];
            bitmap.getPixels(argb, 0, w, 0, 0, w, h);
            bitmap.recycle();
            image = RgbImage.fromArgb(argb, w, h);
        }
        return image.orient(Exif.orientation(head(source)));
    }

    private static byte[] head(Source source) throws IOException {
        byte[] head = new byte[HEAD_BYTES];
        int n = 0;
        InputStream in = source.open();
        try {
            for (int k; n < head.length && (k = in.read(head, n, head.length - n)) > 0; ) {
                n += k;
            }
        } finally {
            in.close();
        }
        return Arrays.copyOf(head, n);
    }

    /** A small upright copy for the screen (every step-th pixel, longest side at most maxSide). */
    static Bitmap thumbnail(RgbImage image, int maxSide) {
        int step = Math.max(1, (Math.max(image.width, image.height) + maxSide - 1) / maxSide);
        int w = Math.max(1, image.width / step), h = Math.max(1, image.height / step);
        int[] argb = new int[w * h];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int i = 3 * ((y * step) * image.width + x * step);
                argb[y * w + x] = 0xFF000000 | (image.rgb[i] & 0xFF) << 16 | (image.rgb[i + 1] & 0xFF) << 8
                        | (image.rgb[i + 2] & 0xFF);
            }
        }
        return Bitmap.createBitmap(argb, w, h, Bitmap.Config.ARGB_8888);
    }
}
