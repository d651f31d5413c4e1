package org.edgepack.demo.core;

import java.io.File;
import java.util.regex.Pattern;

/**
 * A benchmark run asked for by intent (edgepack android bench): the run id names the result file,
 * the prompt is fixed so that runs on different phones compare. Pure logic, tested on the JVM; the
 * activity passes the intent's extras here.
 *
 * <pre>
 * adb shell am start -S -W -n org.edgepack.demo/.MainActivity \
 *     --es org.edgepack.demo.BENCH RUN_ID --ei org.edgepack.demo.BENCH_TOKENS 128 \
 *     --es org.edgepack.demo.BENCH_ARTIFACT FOLDER [--es org.edgepack.demo.BENCH_IMAGE PICTURE]
 * </pre>
 * The result lands in the app's external files directory as bench/RUN_ID.json (BenchReport). With
 * BENCH_IMAGE (a picture edgepack pushed beside the artifact folder) the run asks IMAGE_PROMPT about it.
 */
public final class BenchRequest {

    public static final String EXTRA_RUN = "org.edgepack.demo.BENCH";
    public static final String EXTRA_TOKENS = "org.edgepack.demo.BENCH_TOKENS";
    public static final String EXTRA_ARTIFACT = "org.edgepack.demo.BENCH_ARTIFACT";
    public static final String EXTRA_IMAGE = "org.edgepack.demo.BENCH_IMAGE";
    /** The fixed prompt (edgepack.android.BENCH_PROMPT says the same). */
    public static final String PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle.";
    /** The fixed question about the picture of an image run (edgepack.android.BENCH_IMAGE_PROMPT). */
    public static final String IMAGE_PROMPT = "Describe this picture in detail.";
    public static final int DEFAULT_TOKENS = 128;
    public static final int MAX_TOKENS = 2048;
    public static final String DIR = "bench";
    private static final Pattern RUN_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,99}");

    public final String runId;
    public final int maxNewTokens;
    /** The artifact folder (a child of the files directory) to load, or null for the newest, as on screen. */
    public final String artifact;
    /** The picture (a file in the files directory) to ask about, or null for the text run. */
    public final String image;
    /** PROMPT, or IMAGE_PROMPT when the run has a picture. */
    public final String prompt;

    private BenchRequest(String runId, int maxNewTokens, String artifact, String image) {
        this.runId = runId;
        this.maxNewTokens = maxNewTokens;
        this.artifact = artifact;
        this.image = image;
        this.prompt = image == null ? PROMPT : IMAGE_PROMPT;
    }

    /** fromExtras without a picture: the text run. */
    public static BenchRequest fromExtras(String runId, int tokens, String artifact) {
        return fromExtras(runId, tokens, artifact, null);
    }

    /**
     * The request in an intent's extras, or null when the intent asks for no benchmark (runId null).
     * tokens: the BENCH_TOKENS extra (0 when absent: DEFAULT_TOKENS); artifact: BENCH_ARTIFACT (may be null).
     * image: BENCH_IMAGE (may be null). Throws IllegalArgumentException for a run id, artifact or image
     * that is not a plain file name, or tokens out of range.
     */
    public static BenchRequest fromExtras(String runId, int tokens, String artifact, String image) {
        if (runId == null) {
            return null;
        }
        if (!RUN_ID.matcher(runId).matches() || runId.endsWith(".tmp")) {
            throw new IllegalArgumentException("bench run id must be letters, digits, '.', '_' or '-' "
                    + "(at most 100, not starting with '.' or '-'): " + runId);
        }
        int n = tokens == 0 ? DEFAULT_TOKENS : tokens;
        if (n < 1 || n > MAX_TOKENS) {
            throw new IllegalArgumentException("bench tokens must be 1.." + MAX_TOKENS + ": " + tokens);
        }
        if (artifact != null && !RUN_ID.matcher(artifact).matches()) {
            throw new IllegalArgumentException("bench artifact must be a folder name of letters, digits, '.', '_' "
                    + "or '-': " + artifact);
        }
        if (image != null && (!RUN_ID.matcher(image).matches() || image.endsWith(".tmp"))) {
            throw new IllegalArgumentException("bench image must be a file name of letters, digits, '.', '_' "
                    + "or '-': " + image);
        }
        return new BenchRequest(runId, n, artifact, image);
    }

    /** filesDir/IMAGE: the picture edgepack pushed beside the artifact folder, or null for a text run. */
    public File imageFile(File filesDir) {
        return image == null ? null : new File(filesDir, image);
    }

    /** filesDir/bench/RUN_ID.json: where the report goes (a folder without edgepack.json, never an artifact). */
    public File output(File filesDir) {
        return new File(new File(filesDir, DIR), runId + ".json");
    }
}
