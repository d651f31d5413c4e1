package org.edgepack.demo;

import android.os.Build;

import java.io.File;
import java.util.concurrent.atomic.AtomicBoolean;

import org.json.JSONException;
import org.json.JSONObject;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.BenchReport;
import org.edgepack.demo.core.BenchRequest;
import org.edgepack.demo.core.EngineSetup;
import org.edgepack.demo.core.MultimodalChat;
import org.edgepack.demo.core.PictureRoute;
import org.edgepack.demo.core.ProcStatus;
import org.edgepack.demo.core.RgbImage;
import org.edgepack.demo.core.StreamAssembler;
import org.edgepack.demo.core.StreamStats;

/**
 * The bench intent's one answer (edgepack android bench), on the worker thread after the load: the
 * fixed prompt with genai's loop or the picture loop, or, with BENCH_IMAGE, the fixed question about
 * the picture edgepack pushed beside the artifact (decoded, encoded and answered as on screen). The
 * report (core/BenchReport) is written also when the run fails, so edgepack's wait always ends.
 */
final class BenchRun {

    /** What the run shows while it goes. */
    interface Screen {
        void status(String message);

        void piece(String text, String summary);
    }

    private BenchRun() {
    }

    static JSONObject run(BenchRequest bench, File dir, GenAiRunner runner, PictureRunner pictures, PictureRoute route,
                          String loadError, String artifact, String model, double loadSeconds, int threads,
                          final Screen screen) {
        if (runner == null && pictures == null) {
            return BenchReport.failure(bench, loadError, artifact, device(), engine());
        }
        final AtomicBoolean stop = new AtomicBoolean();
        final StreamAssembler assembler = new StreamAssembler(pictures != null ? pictures.stopStrings() : runner.stopStrings());
        final StringBuilder text = new StringBuilder();
        String error = null;
        int promptTokens = 0;
        StreamStats stats = null;
        MultimodalChat.Result result = null;
        MultimodalChat.Image image = null;
        long start = System.nanoTime();
        try {
            if (bench.image != null) {
                route.requirePictures();  // a text artifact asked about a picture: its one message
                screen.status("Benchmark " + bench.runId + ": encoding " + bench.image);
                File file = bench.imageFile(dir);
                if (!file.isFile()) {
                    throw new ArtifactException(ArtifactException.Kind.NOT_FOUND, "The bench picture " + file
                            + " is not there: edgepack android bench --image pushes it beside the artifact.");
                }
                RgbImage picture = PictureDecoder.read(PictureDecoder.of(file));
                image = pictures.encode(picture, null);
            }
            screen.status("Benchmark " + bench.runId + ": " + bench.prompt);
            final StreamStats live = new StreamStats(start);
            stats = live;
            GenAiRunner.Listener listener = new GenAiRunner.Listener() {
                @Override
                public void onPiece(String piece) {
                    String visible = assembler.add(piece);
                    live.onToken(visible, System.nanoTime());
                    text.append(visible);
                    screen.piece(visible, live.summary());
                    if (assembler.stopped()) {
                        stop.set(true);
                    }
                }
            };
            if (pictures != null) {
                promptTokens = pictures.promptTokens(bench.prompt, image);
                result = pictures.generate(bench.prompt, image, bench.maxNewTokens, stop, listener);
            } else {
                promptTokens = runner.promptIds(bench.prompt).length;
                runner.generate(bench.prompt, bench.maxNewTokens, stop, listener);
            }
            String rest = assembler.finish();
            live.onText(rest);
            text.append(rest);
        } catch (ArtifactException e) {
            error = e.getMessage();
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
        if (error != null || stats == null || stats.tokens() == 0) {
            return BenchReport.failure(bench, error == null ? "no token generated" : error, artifact, device(), engine());
        }
        JSONObject report = BenchReport.success(bench, promptTokens, stats, text.toString(), memory, loadSeconds,
                threads, artifact, model, device(), engine());
        if (image != null) {
            // the loop's own clock starts its TTFT at the prefill, after the encode
            BenchReport.withImage(report, bench, image.encodeMs, result.stats.ttftSeconds());
        }
        return report;
    }

    static JSONObject device() {
        try {
            return new JSONObject().put("manufacturer", Build.MANUFACTURER).put("model", Build.MODEL)
                    .put("abi", Engines.abi()).put("sdk", Build.VERSION.SDK_INT)
                    .put("cores", Runtime.getRuntime().availableProcessors());
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static JSONObject engine() {
        try {
            return new JSONObject().put("onnxruntime_genai", EngineSetup.GENAI_VERSION)
                    .put("onnxruntime", EngineSetup.ONNXRUNTIME_VERSION);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }
}
