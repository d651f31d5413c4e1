package org.edgepack.demo;

import android.app.ActivityManager;
import android.content.Context;
import android.os.Build;

import java.io.File;
import java.util.List;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.ArtifactManifest;
import org.edgepack.demo.core.EngineSetup;
import org.edgepack.demo.core.PictureRoute;

/**
 * The loaded artifact's engine, whichever PictureRoute chose: genai's text loop (GenAiRunner) or the
 * picture loop (PictureRunner). Owned by the activity's worker thread; close() frees the sessions so a
 * second artifact loads into the memory the first one used.
 */
final class Engines implements AutoCloseable {

    GenAiRunner text;
    PictureRunner pictures;
    private volatile boolean loaded;

    /** Loads root's onnx folder on the route's loop; returns the message to show, or null when loaded. */
    String load(File root, ArtifactManifest manifest, PictureRoute route, int threads) {
        close();
        try {
            if (route.pictures) {
                pictures = new PictureRunner(route, threads, manifest.chatTemplate);
            } else {
                text = new GenAiRunner(new File(root, manifest.onnxPath), threads, manifest.chatTemplate);
            }
        } catch (ArtifactException e) {
            return e.getMessage();
        } catch (OutOfMemoryError e) {
            return EngineSetup.loadFailure("out of memory (" + e.getMessage() + ")");
        } catch (UnsatisfiedLinkError e) {
            return route.engineName() + "'s native libraries did not load on this phone (" + abi()
                    + "): " + e.getMessage() + "\n\nThis APK carries them for arm64-v8a and x86_64. On a phone "
                    + "with 16 KB memory pages, libmat.so (4 KB-aligned upstream) may not load.";
        } catch (Exception e) {
            return EngineSetup.loadFailure(e.getMessage());
        }
        loaded = true;
        return null;
    }

    /** Any thread: whether a model is ready for a question. */
    boolean loaded() {
        return loaded;
    }

    List<String> stopStrings() {
        return pictures != null ? pictures.stopStrings() : text.stopStrings();
    }

    /** For the ready line: what the loaded loop answers. */
    String describe() {
        return pictures != null ? "pictures and text (onnxruntime)" : "prompt format " + text.promptFormat;
    }

    /** ActivityManager's availMem: what the memory check compares the route's needs with. */
    static long availableMemory(Context context) {
        ActivityManager am = (ActivityManager) context.getSystemService(Context.ACTIVITY_SERVICE);
        ActivityManager.MemoryInfo info = new ActivityManager.MemoryInfo();
        am.getMemoryInfo(info);
        return info.availMem;
    }

    static String abi() {
        return Build.SUPPORTED_ABIS.length > 0 ? Build.SUPPORTED_ABIS[0] : "unknown ABI";
    }

    @Override
    public void close() {
        loaded = false;
        if (text != null) {
            text.close();
            text = null;
        }
        if (pictures != null) {
            pictures.close();
            pictures = null;
        }
    }
}
