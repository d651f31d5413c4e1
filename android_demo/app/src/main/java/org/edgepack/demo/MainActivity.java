package org.edgepack.demo;

import android.app.Activity;
import android.app.ActivityManager;
import android.content.Context;
import android.content.Intent;
import android.graphics.Color;
import android.os.Build;
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
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;

import java.io.File;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicBoolean;

import org.json.JSONException;
import org.json.JSONObject;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.ArtifactManifest;
import org.edgepack.demo.core.ArtifactVerifier;
import org.edgepack.demo.core.BenchReport;
import org.edgepack.demo.core.BenchRequest;
import org.edgepack.demo.core.EngineSetup;
import org.edgepack.demo.core.ProcStatus;
import org.edgepack.demo.core.StreamAssembler;
import org.edgepack.demo.core.StreamStats;

/**
 * One screen: find the artifact pushed into the app's external files directory, check every file
 * against edgepack.json, load it with onnxruntime-genai, then stream answers with live tokens/s
 * and the ratio to human speech. All model work runs on one worker thread. Every failure ends as
 * one message: no artifact pushed, a missing/partial/corrupt file, not enough memory, the engine's
 * libraries not loading, or genai's own load error text.
 *
 * Started with a bench intent (core/BenchRequest: edgepack android bench), it loads the named artifact,
 * answers the fixed prompt once and writes bench/RUN.json (core/BenchReport), also when it fails.
 */
public class MainActivity extends Activity {

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
    private TextView statsView;
    private TextView outputView;
    private ScrollView outputScroll;

    // Owned by the worker thread.
    private GenAiRunner runner;
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
                    intent.getIntExtra(BenchRequest.EXTRA_TOKENS, 0), intent.getStringExtra(BenchRequest.EXTRA_ARTIFACT));
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
                if (runner != null) {
                    runner.close();
                    runner = null;
                }
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
        buttons.addView(runButton);
        buttons.addView(stopButton);
        root.addView(buttons);

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
            showStatus("Checking " + root.getName() + others + " against edgepack.json\u2026");
            manifest = ArtifactVerifier.verify(root, new ArtifactVerifier.Progress() {
                private long lastShown;

                @Override
                public void onProgress(String path, long done, long total) {
                    long now = SystemClock.uptimeMillis();
                    if (now - lastShown >= PROGRESS_EVERY_MS || done == total) {
                        lastShown = now;
                        showStatus(String.format(Locale.ROOT, "Checking sha256 of %s: %d%%",
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
        String memory = EngineSetup.notEnoughMemory(EngineSetup.memoryNeeded(manifest.totalBytes()), availableMemory());
        if (memory != null) {
            showError(memory);
            return;
        }
        threads = EngineSetup.threads(Runtime.getRuntime().availableProcessors());
        modelName = name;
        String loading = "Loading " + name + " into onnxruntime-genai (" + manifest.totalBytes() / (1024 * 1024)
                + " MiB, " + threads + " threads)";
        AtomicBoolean ticking = startTicker(loading);
        long loadStart = SystemClock.uptimeMillis();
        String failure = null;
        try {
            runner = new GenAiRunner(new File(root, manifest.onnxPath), threads, manifest.chatTemplate);
        } catch (OutOfMemoryError e) {
            failure = EngineSetup.loadFailure("out of memory (" + e.getMessage() + ")");
        } catch (UnsatisfiedLinkError e) {
            failure = "onnxruntime-genai's native libraries did not load on this phone (" + abi() + "): "
                    + e.getMessage() + "\n\nThis APK carries them for arm64-v8a and x86_64. On a phone "
                    + "with 16 KB memory pages, libmat.so (4 KB-aligned upstream) may not load.";
        } catch (Exception e) {
            failure = EngineSetup.loadFailure(e.getMessage());
        } finally {
            ticking.set(false);  // before any message below is posted: no tick can overwrite it
        }
        if (failure != null) {
            showError(failure);
            return;
        }
        loadSeconds = (SystemClock.uptimeMillis() - loadStart) / 1000.0;
        Log.i(TAG, String.format(Locale.ROOT, "loaded %s in %.2f s (%s, onnxruntime-genai, %d threads)",
                root, loadSeconds, abi(), threads));
        showReady(name + " from " + root.getName() + others + ": " + manifest.onnxFiles.size()
                + " files verified, prompt format " + runner.promptFormat + ", " + threads
                + " threads, edgepack " + manifest.edgepackVersion);
    }

    /** Worker thread, after load(): the bench intent's one answer, its figures written to bench/RUN.json. */
    private void runBench(File dir) {
        JSONObject report;
        if (runner == null) {
            report = BenchReport.failure(bench, lastError, artifactName, device(), engine());
        } else {
            final StreamAssembler assembler = new StreamAssembler(runner.stopStrings());
            final StringBuilder text = new StringBuilder();
            String error = null;
            int promptTokens = 0;
            StreamStats stats = null;
            showStatus("Benchmark " + bench.runId + ": " + bench.prompt);
            try {
                promptTokens = runner.promptIds(bench.prompt).length;
                final StreamStats live = new StreamStats(System.nanoTime());
                stats = live;
                runner.generate(bench.prompt, bench.maxNewTokens, stop, new GenAiRunner.Listener() {
                    @Override
                    public void onPiece(String piece) {
                        String visible = assembler.add(piece);
                        live.onToken(visible, System.nanoTime());
                        text.append(visible);
                        showPiece(visible, live.summary());
                        if (assembler.stopped()) {
                            stop.set(true);
                        }
                    }
                });
                String rest = assembler.finish();
                live.onText(rest);
                text.append(rest);
            } catch (Exception e) {
                error = "Generation failed: " + e.getMessage();
            } catch (OutOfMemoryError e) {
                error = "Generation ran out of memory";
            }
            ProcStatus memory;
            try {
                memory = ProcStatus.read();
            } catch (java.io.IOException e) {
                memory = ProcStatus.parse("");
            }
            report = error != null || stats == null || stats.tokens() == 0
                    ? BenchReport.failure(bench, error == null ? "no token generated" : error, artifactName, device(), engine())
                    : BenchReport.success(bench, promptTokens, stats, text.toString(), memory, loadSeconds, threads,
                            artifactName, modelName, device(), engine());
        }
        File out = bench.output(dir);
        try {
            BenchReport.write(report, out);
            Log.i(TAG, "bench: wrote " + out);
            showReady("Benchmark written to " + out);
        } catch (Exception e) {
            showError("Could not write the benchmark result " + out + ": " + e.getMessage());
        }
    }

    private static JSONObject device() {
        try {
            return new JSONObject().put("manufacturer", Build.MANUFACTURER).put("model", Build.MODEL)
                    .put("abi", abi()).put("sdk", Build.VERSION.SDK_INT)
                    .put("cores", Runtime.getRuntime().availableProcessors());
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    private static JSONObject engine() {
        try {
            return new JSONObject().put("onnxruntime_genai", EngineSetup.GENAI_VERSION)
                    .put("onnxruntime", EngineSetup.ONNXRUNTIME_VERSION);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
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

    private long availableMemory() {
        ActivityManager am = (ActivityManager) getSystemService(Context.ACTIVITY_SERVICE);
        ActivityManager.MemoryInfo info = new ActivityManager.MemoryInfo();
        am.getMemoryInfo(info);
        return info.availMem;
    }

    private static String abi() {
        return Build.SUPPORTED_ABIS.length > 0 ? Build.SUPPORTED_ABIS[0] : "unknown ABI";
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

    /** Worker thread: one answer, streamed piece by piece to the screen. */
    private void answer(String prompt) {
        final StreamAssembler assembler = new StreamAssembler(runner.stopStrings());
        final StreamStats stats = new StreamStats(System.nanoTime());
        String error = null;
        try {
            runner.generate(prompt, stop, new GenAiRunner.Listener() {
                @Override
                public void onPiece(String piece) {
                    String visible = assembler.add(piece);
                    stats.onToken(visible, System.nanoTime());
                    showPiece(visible, stats.summary());
                    if (assembler.stopped()) {
                        stop.set(true);
                    }
                }
            });
        } catch (Exception e) {
            error = "Generation failed: " + e.getMessage();
        } catch (OutOfMemoryError e) {
            error = "Generation ran out of memory: close other apps, or ask for a shorter answer.";
        }
        String rest = assembler.finish();
        stats.onText(rest);
        showPiece(rest, stats.summary() + (stop.get() && !assembler.stopped() ? " \u00b7 stopped" : ""));
        Log.i(TAG, "answer: " + stats.summary() + (error == null ? "" : " \u00b7 " + error));
        final String failure = error;
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                if (failure != null) {
                    setStatus(failure, true);
                }
                setBusy(false, false);
            }
        });
    }

    private void showPiece(final String text, final String summary) {
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

    private void showStatus(final String message) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                setStatus(message, false);
            }
        });
    }

    private void showReady(final String message) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                setStatus(message, false);
                setBusy(false, false);
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
