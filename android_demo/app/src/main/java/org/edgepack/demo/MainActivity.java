package org.edgepack.demo;

import android.app.Activity;
import android.content.Intent;
import android.graphics.Color;
import android.net.Uri;
import android.os.Bundle;
import android.os.Handler;
import android.os.Looper;
import android.os.SystemClock;
import android.text.InputType;
import android.util.Log;
import android.util.TypedValue;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.ImageView;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;

import java.io.File;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicBoolean;

import org.json.JSONObject;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.ArtifactManifest;
import org.edgepack.demo.core.ArtifactVerifier;
import org.edgepack.demo.core.BenchReport;
import org.edgepack.demo.core.BenchRequest;
import org.edgepack.demo.core.EngineSetup;
import org.edgepack.demo.core.MultimodalChat;
import org.edgepack.demo.core.PictureRoute;
import org.edgepack.demo.core.RgbImage;
import org.edgepack.demo.core.StreamAssembler;
import org.edgepack.demo.core.StreamStats;

/**
 * One screen: find the artifact pushed into the app's external files directory, check every file
 * against edgepack.json, load it with onnxruntime-genai, then stream answers with live tokens/s
 * and the ratio to human speech. All model work runs on one worker thread. Every failure ends as
 * one message: no artifact pushed, a missing/partial/corrupt file, not enough memory, the engine's
 * libraries not loading, or genai's own load error text.
 *
 * A MiniCPM-V artifact (core/PictureRoute) runs every turn in the picture loop (PictureRunner:
 * onnxruntime's Java API); "Picture" opens the system's picker (no storage permission), the picture is
 * decoded and checked by PictureDecoder, shown as a thumbnail, and encoded (vision.onnx per slice) with
 * the next question. A text artifact keeps genai's loop, and a picture asked of it gets one message.
 *
 * Started with a bench intent (core/BenchRequest: edgepack android bench), it loads the named artifact,
 * answers the fixed prompt once (about BENCH_IMAGE, if named) and writes bench/RUN.json (BenchRun,
 * core/BenchReport), also when it fails.
 */
public class MainActivity extends Activity implements BenchRun.Screen, PictureChooser.Host {

    /** logcat tag: adb logcat -s edgepack (android_demo/README.md). */
    static final String TAG = "edgepack";
    private static final int ERROR_COLOR = Color.rgb(0xB0, 0x00, 0x20);
    private static final long PROGRESS_EVERY_MS = 250;

    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private final AtomicBoolean stop = new AtomicBoolean();
    private final Handler ui = new Handler(Looper.getMainLooper());

    private TextView statusView;
    private EditText promptView;
    private Button runButton;
    private Button stopButton;
    private Button pictureButton;
    private ImageView thumbView;
    private TextView statsView;
    private TextView outputView;
    private ScrollView outputScroll;

    // Owned by the worker thread.
    private final Engines engines = new Engines();
    private PictureRoute route;
    private RgbImage picture;  // the chosen picture, upright; null: text only
    private MultimodalChat.Image encoded;  // its vision.onnx rows, once asked about
    private BenchRequest bench;
    private String lastError;
    private String artifactName = "";
    private String modelName = "";
    private double loadSeconds;
    private int threads;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(buildViews());
        setBusy(true, false);
        final File dir = getExternalFilesDir(null);
        Intent intent = getIntent();
        try {
            bench = BenchRequest.fromExtras(intent.getStringExtra(BenchRequest.EXTRA_RUN),
                    intent.getIntExtra(BenchRequest.EXTRA_TOKENS, 0), intent.getStringExtra(BenchRequest.EXTRA_ARTIFACT),
                    intent.getStringExtra(BenchRequest.EXTRA_IMAGE));
        } catch (IllegalArgumentException e) {
            Log.e(TAG, "bench intent refused: " + e.getMessage());  // no valid run id: no file to write
        }
        worker.execute(new Runnable() {
            @Override
            public void run() {
                load(dir);
                if (bench != null) {
                    runBench(dir);
                }
            }
        });
    }

    @Override
    protected void onDestroy() {
        stop.set(true);
        worker.execute(new Runnable() {
            @Override
            public void run() {
                engines.close();
            }
        });
        worker.shutdown();
        super.onDestroy();
    }

    private View buildViews() {
        int pad = dp(12);
        LinearLayout root = new LinearLayout(this);
        root.setOrientation(LinearLayout.VERTICAL);
        root.setPadding(pad, pad, pad, pad);

        statusView = new TextView(this);
        root.addView(statusView);

        promptView = new EditText(this);
        promptView.setHint("Ask something");
        promptView.setInputType(InputType.TYPE_CLASS_TEXT | InputType.TYPE_TEXT_FLAG_MULTI_LINE);
        promptView.setMaxLines(4);
        root.addView(promptView, matchWidth());

        LinearLayout buttons = new LinearLayout(this);
        buttons.setOrientation(LinearLayout.HORIZONTAL);
        runButton = new Button(this);
        runButton.setText("Generate");
        runButton.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                startAnswer(promptView.getText().toString());
            }
        });
        stopButton = new Button(this);
        stopButton.setText("Stop");
        stopButton.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                stop.set(true);
            }
        });
        pictureButton = new Button(this);
        pictureButton.setText("Picture");
        pictureButton.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                String none = PictureChooser.pick(MainActivity.this);
                if (none != null) {
                    setStatus(none, true);
                }
            }
        });
        buttons.addView(pictureButton);
        buttons.addView(runButton);
        buttons.addView(stopButton);
        root.addView(buttons);
        thumbView = new ImageView(this);
        thumbView.setAdjustViewBounds(true);
        thumbView.setMaxHeight(dp(120));
        thumbView.setVisibility(View.GONE);
        root.addView(thumbView);

        statsView = new TextView(this);
        statsView.setTextSize(TypedValue.COMPLEX_UNIT_SP, 13);
        root.addView(statsView);

        outputScroll = new ScrollView(this);
        outputView = new TextView(this);
        outputView.setTextSize(TypedValue.COMPLEX_UNIT_SP, 16);
        outputView.setTextIsSelectable(true);
        outputScroll.addView(outputView);
        root.addView(outputScroll, new LinearLayout.LayoutParams(
                LinearLayout.LayoutParams.MATCH_PARENT, 0, 1f));
        return root;
    }

    /** Worker thread: locate, verify, check memory, load. Every failure ends as one message on screen. */
    private void load(File dir) {
        engines.close();  // a second artifact: the first one's sessions and memory go first
        encoded = null;
        if (dir == null) {
            showError("The app's storage (Android/data/" + getPackageName() + "/files) is not available. "
                    + "Check that the phone's shared storage is mounted, then reopen the app.");
            return;
        }
        List<File> found = ArtifactVerifier.findArtifacts(dir);
        if (bench != null && bench.artifact != null) {  // the folder edgepack android bench pushed, not the newest
            found = ArtifactVerifier.findArtifacts(new File(dir, bench.artifact));
        }
        if (found.isEmpty()) {
            showError("No artifact found in " + dir + ".\n\nPush one from your computer:\n"
                    + "  edgepack android push ARTIFACT");
            return;
        }
        final File root = found.get(0);
        artifactName = root.getName();
        String others = found.size() > 1 ? " (newest of " + found.size() + ")" : "";
        ArtifactManifest manifest;
        try {
            status("Checking " + root.getName() + others + " against edgepack.json\u2026");
            manifest = ArtifactVerifier.verify(root, new ArtifactVerifier.Progress() {
                private long lastShown;

                @Override
                public void onProgress(String path, long done, long total) {
                    long now = SystemClock.uptimeMillis();
                    if (now - lastShown >= PROGRESS_EVERY_MS || done == total) {
                        lastShown = now;
                        status(String.format(Locale.ROOT, "Checking sha256 of %s: %d%%",
                                path, total == 0 ? 100 : done * 100 / total));
                    }
                }
            });
        } catch (ArtifactException e) {
            showError(e.getMessage());
            return;
        } catch (Exception e) {
            showError("Could not read the artifact: " + e);
            return;
        }
        String name = manifest.modelName.isEmpty() ? root.getName() : manifest.modelName;
        try {
            route = PictureRoute.choose(root, manifest);
        } catch (ArtifactException e) {
            showError(e.getMessage());
            return;
        }
        String memory = EngineSetup.notEnoughMemory(route.memoryNeeded(), Engines.availableMemory(this));
        if (memory != null) {
            showError(memory);
            return;
        }
        threads = EngineSetup.threads(Runtime.getRuntime().availableProcessors());
        modelName = name;
        String loading = "Loading " + name + " into " + route.engineName() + " (" + route.bytesToLoad / (1024 * 1024)
                + " MiB, " + threads + " threads)";
        AtomicBoolean ticking = startTicker(loading);
        long loadStart = SystemClock.uptimeMillis();
        String failure;
        try {
            failure = engines.load(root, manifest, route, threads);
        } finally {
            ticking.set(false);  // before any message below is posted: no tick can overwrite it
        }
        if (failure != null) {
            showError(failure);
            return;
        }
        loadSeconds = (SystemClock.uptimeMillis() - loadStart) / 1000.0;
        Log.i(TAG, String.format(Locale.ROOT, "loaded %s in %.2f s (%s, %s, %d threads)",
                root, loadSeconds, Engines.abi(), route.engineName(), threads));
        showReady(name + " from " + root.getName() + others + ": " + manifest.onnxFiles.size()
                + " files verified, " + engines.describe() + ", " + threads + " threads, edgepack "
                + manifest.edgepackVersion + (manifest.fidelityLine().isEmpty() ? "" : "\n" + manifest.fidelityLine()));
    }

    @Override
    protected void onActivityResult(int requestCode, int resultCode, Intent data) {
        super.onActivityResult(requestCode, resultCode, data);
        if (requestCode != PictureChooser.REQUEST || resultCode != RESULT_OK || data == null || data.getData() == null) {
            return;
        }
        final Uri uri = data.getData();
        setBusy(true, false);
        worker.execute(new Runnable() {
            @Override
            public void run() {
                PictureChooser.decode(getContentResolver(), uri, route, dp(240), MainActivity.this);
            }
        });
    }

    /** Worker thread (PictureChooser.Host): a picture that cannot be used. */
    @Override
    public void problem(String message) {
        Log.e(TAG, message);
        showProblem(message);
    }

    /** Worker thread (PictureChooser.Host): the picture the next questions are about. */
    @Override
    public void chosen(RgbImage chosen, final android.graphics.Bitmap thumb, String line) {
        picture = chosen;
        encoded = null;
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                thumbView.setImageBitmap(thumb);
                thumbView.setVisibility(View.VISIBLE);
            }
        });
        showReady(line);
    }

    /** Worker thread, after load(): the bench intent's one answer, its figures written to bench/RUN.json. */
    private void runBench(File dir) {
        JSONObject report = BenchRun.run(bench, dir, engines.text, engines.pictures, route, lastError, artifactName,
                modelName, loadSeconds, threads, this);
        File out = bench.output(dir);
        try {
            BenchReport.write(report, out);
            Log.i(TAG, "bench: wrote " + out);
            showReady("Benchmark written to " + out);
        } catch (Exception e) {
            showError("Could not write the benchmark result " + out + ": " + e.getMessage());
        }
    }

    /** Shows message with the seconds elapsed, every 250 ms, until the returned flag is cleared. */
    private AtomicBoolean startTicker(final String message) {
        final long start = SystemClock.uptimeMillis();
        final AtomicBoolean ticking = new AtomicBoolean(true);
        ui.post(new Runnable() {
            @Override
            public void run() {
                if (!ticking.get()) {
                    return;
                }
                double s = (SystemClock.uptimeMillis() - start) / 1000.0;
                setStatus(String.format(Locale.ROOT, "%s\u2026 %.1f s", message, s), false);
                ui.postDelayed(this, PROGRESS_EVERY_MS);
            }
        });
        return ticking;
    }

    private void startAnswer(final String prompt) {
        if (prompt.trim().isEmpty()) {
            return;
        }
        stop.set(false);
        outputView.setText("");
        statsView.setText("Prefill\u2026");
        setBusy(true, true);
        worker.execute(new Runnable() {
            @Override
            public void run() {
                answer(prompt);
            }
        });
    }

    /** Worker thread: one answer (about the chosen picture, with a MiniCPM-V artifact), streamed to the screen. */
    private void answer(String prompt) {
        String error = null, line = "";
        StreamStats stats = new StreamStats(System.nanoTime());
        StreamAssembler assembler = new StreamAssembler(engines.stopStrings());
        try {
            PictureRunner pictures = engines.pictures;
            if (pictures != null && picture != null && encoded == null) {
                piece("", "Encoding the picture\u2026");
                encoded = pictures.encode(picture, null);
            }
            line = pictures != null && picture != null ? PictureRoute.encodeSummary(encoded.encodeMs) + " \u00b7 " : "";
            stats = new StreamStats(System.nanoTime());  // TTFT after the encode, as the bench's ttft_after_encode_s
            GenAiRunner.Listener listener = streamTo(assembler, stats, line);
            if (pictures != null) {
                pictures.generate(prompt, picture == null ? null : encoded, GenAiRunner.MAX_NEW_TOKENS, stop, listener);
            } else {
                engines.text.generate(prompt, stop, listener);
            }
        } catch (ArtifactException e) {
            error = e.getMessage();
        } catch (Exception e) {
            error = "Generation failed: " + e.getMessage();
        } catch (OutOfMemoryError e) {
            error = "Generation ran out of memory: close other apps, or ask for a shorter answer.";
        }
        String rest = assembler.finish();
        stats.onText(rest);
        piece(rest, line + stats.summary() + (stop.get() && !assembler.stopped() ? " \u00b7 stopped" : ""));
        Log.i(TAG, "answer: " + line + stats.summary() + (error == null ? "" : " \u00b7 " + error));
        if (error != null) {
            showProblem(error);
        } else {
            showReady(null);
        }
    }

    private GenAiRunner.Listener streamTo(final StreamAssembler assembler, final StreamStats stats, final String line) {
        return new GenAiRunner.Listener() {
            @Override
            public void onPiece(String piece) {
                String visible = assembler.add(piece);
                stats.onToken(visible, System.nanoTime());
                piece(visible, line + stats.summary());
                if (assembler.stopped()) {
                    stop.set(true);
                }
            }
        };
    }

    @Override
    public void piece(final String text, final String summary) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                if (!text.isEmpty()) {
                    outputView.append(text);
                    outputScroll.fullScroll(View.FOCUS_DOWN);
                }
                statsView.setText(summary);
            }
        });
    }

    @Override
    public void status(final String message) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                setStatus(message, false);
            }
        });
    }

    /** message (null: keep the status line), then the buttons are usable again. */
    private void showReady(final String message) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                if (message != null) {
                    setStatus(message, false);
                }
                setBusy(!engines.loaded(), false);
            }
        });
    }

    /** A message in red that leaves the loaded model usable (a bad picture, a failed answer). */
    private void showProblem(final String message) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                setStatus(message, true);
                setBusy(!engines.loaded(), false);
            }
        });
    }

    private void showError(final String message) {
        lastError = message;
        Log.e(TAG, message);
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                setStatus(message, true);
                setBusy(true, false);
            }
        });
    }

    private void setStatus(String message, boolean error) {
        statusView.setText(message);
        statusView.setTextColor(error ? ERROR_COLOR : Color.DKGRAY);
    }

    private void setBusy(boolean busy, boolean stoppable) {
        pictureButton.setEnabled(!busy);
        runButton.setEnabled(!busy);
        promptView.setEnabled(!busy);
        stopButton.setEnabled(stoppable);
    }

    private LinearLayout.LayoutParams matchWidth() {
        return new LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT,
                LinearLayout.LayoutParams.WRAP_CONTENT);
    }

    private int dp(int value) {
        return (int) TypedValue.applyDimension(TypedValue.COMPLEX_UNIT_DIP, value,
                getResources().getDisplayMetrics());
    }
}
