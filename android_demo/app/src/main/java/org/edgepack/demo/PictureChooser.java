package org.edgepack.demo;

import android.app.Activity;
import android.content.ActivityNotFoundException;
import android.content.ContentResolver;
import android.content.Intent;
import android.graphics.Bitmap;
import android.net.Uri;
import android.os.Build;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.PictureRoute;
import org.edgepack.demo.core.RgbImage;

/**
 * The "Picture" button: the system photo picker where the platform has one (MediaStore.ACTION_PICK_IMAGES,
 * Android 13+), else ACTION_GET_CONTENT for image/* (CATEGORY_OPENABLE); neither needs a storage
 * permission. The picked Uri is then refused or decoded (PictureDecoder) on the worker thread.
 */
final class PictureChooser {

    static final int REQUEST = 1;
    /** MediaStore.ACTION_PICK_IMAGES (API 33; this app compiles against API 23). */
    private static final String PICK_IMAGES = "android.provider.action.PICK_IMAGES";

    /** What the screen does with the outcome (called on the worker thread). */
    interface Host {
        void problem(String message);

        void chosen(RgbImage picture, Bitmap thumbnail, String line);
    }

    private PictureChooser() {
    }

    /** Opens the picker; returns the message to show when the phone has none, else null. */
    static String pick(Activity activity) {
        Intent pick = new Intent(PICK_IMAGES).setType("image/*");
        if (Build.VERSION.SDK_INT < 33 || pick.resolveActivity(activity.getPackageManager()) == null) {
            pick = new Intent(Intent.ACTION_GET_CONTENT).setType("image/*").addCategory(Intent.CATEGORY_OPENABLE);
        }
        try {
            activity.startActivityForResult(pick, REQUEST);
            return null;
        } catch (ActivityNotFoundException e) {
            return "This phone has no app to pick a picture with.";
        }
    }

    /** Worker thread: one message (route's refusal, not a picture, too big, unreadable) or the picture. */
    static void decode(ContentResolver resolver, Uri uri, PictureRoute route, int thumbPx, Host host) {
        String name = "the picture";
        try {
            if (route != null) {
                route.requirePictures();  // a text artifact, or MiniCPM-V without vision.onnx: said first
            }
            PictureDecoder.Source source = PictureDecoder.of(resolver, uri);
            name = source.name();
            RgbImage picture = PictureDecoder.read(source);
            host.chosen(picture, PictureDecoder.thumbnail(picture, thumbPx),
                    name + ": " + picture.width + "x" + picture.height + ". Ask about it.");
        } catch (ArtifactException e) {
            host.problem(e.getMessage());
        } catch (java.io.IOException e) {
            host.problem("Could not read " + name + ": " + e.getMessage());
        } catch (OutOfMemoryError e) {
            host.problem(name + " is too large to decode in this phone's free memory.");
        }
    }
}
