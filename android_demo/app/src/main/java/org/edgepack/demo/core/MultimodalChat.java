package org.edgepack.demo.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A MiniCPM-V artifact answering about pictures, in the order edgepack's Python runtime makes its
 * calls (edgepack/runtime/vision.py, onnx_vision.py, onnx_backend.py, generate.py):
 *
 * <ol>
 * <li>{@link #encode}: vision.onnx once per slice (overview first), fed pixel_values, key_pos and
 *     position_ids (4.0) or pos_rows/pos_cols (2.0) from {@link VisionInputs};</li>
 * <li>{@link #promptIds}: the chat template rendered with {@link #MARK} where each picture goes,
 *     split there; the first piece tokenized with BOS by the tokenizer's rule, each picture's
 *     placeholder ({@link ImagePrompt#parts}: marker ids as vision.marker_ids, its rows as
 *     negative ids -1 - r), the text after it tokenized;</li>
 * <li>{@link #ask}: the prompt prefilled in runs (text through embedding.onnx, image rows as they
 *     are: WithImages), each cut into {@link EmbedsDecoder#PIECE}-row decoder runs, then greedy or
 *     sampled decode until an EOS id or maxNewTokens, one decoder run per token.</li>
 * </ol>
 * Consecutive asks reuse the cache when the new prompt extends the cached one with the same
 * pictures (a chat's history), as CacheState does. Not thread-safe; one ask at a time.
 */
public final class MultimodalChat {

    /** Where a picture goes in a message's content (the Python runtime's MARK is "\0image\0"; this one
     *  keeps NUL out of the JSON a native template engine parses). */
    public static final String MARK = "\uE000image\uE000";

    /** One encoded picture: per slice queryNum × embedDim rows, overview first. */
    public static final class Image {
        public final float[][] embeds;
        public final int[] grid;
        public final double[] encodeMs;

        Image(float[][] embeds, int[] grid, double[] encodeMs) {
            this.embeds = embeds;
            this.grid = grid;
            this.encodeMs = encodeMs;
        }

        public int slices() {
            return embeds.length;
        }

        public double totalEncodeMs() {
            double s = 0;
            for (double ms : encodeMs) {
                s += ms;
            }
            return s;
        }
    }

    /** Progress for the screen; every method may be left as is. */
    public abstract static class Listener {
        public void onSliceEncoded(int slice, int slices, double ms) {
        }

        /** One generated token (EOS excluded) and the text it made visible (may be ""). */
        public void onToken(int id, String text, StreamStats stats) {
        }

        /** The logits step's token is picked from (before any sampling transform); for tests and tools. */
        public void onLogits(int step, float[] logits) {
        }

        /** Text released after the last token (what the detokenizer held back). */
        public void onText(String text) {
        }
    }

    /** The outcome of one ask. */
    public static final class Result {
        public final int[] ids;
        public final String text, finishReason;  // eos | length | context | stopped
        public final int promptTokens, prefillTokens;
        public final StreamStats stats;  // TTFT counted from the start of the prefill (after the encode)

        Result(int[] ids, String text, String finishReason, int promptTokens, int prefillTokens, StreamStats stats) {
            this.ids = ids;
            this.text = text;
            this.finishReason = finishReason;
            this.promptTokens = promptTokens;
            this.prefillTokens = prefillTokens;
            this.stats = stats;
        }
    }

    public final VisionArtifact artifact;
    public final VisionSpec vision;
    private final OnnxEngine engine;
    private final PromptTokenizer tok;
    private final List<OnnxEngine.Graph> graphs = new ArrayList<OnnxEngine.Graph>();
    private final OnnxEngine.Graph visionGraph;
    private final EmbedsDecoder decoder;
    private final int[] eos;
    private volatile boolean stopRequested;
    private int[] cachedIds = new int[0];  // what the decoder's cache holds (negative: image rows)
    private List<Image> cachedImages = new ArrayList<Image>();

    /** Checks the artifact can take pictures (before loading anything), then loads its three graphs. */
    public MultimodalChat(VisionArtifact artifact, OnnxEngine engine, PromptTokenizer tok) throws ArtifactException {
        artifact.requirePictures();
        this.artifact = artifact;
        this.vision = VisionSpec.fromJson(artifact.visionJson);
        this.engine = engine;
        this.tok = tok;
        this.eos = tok.eosIds().clone();
        try {
            visionGraph = open(artifact.visionFile);
            String pos = vision.position.equals("bucketed") ? "position_ids" : "pos_rows";
            requireInputs(artifact.visionFile, visionGraph, "pixel_values", "key_pos", pos);
            if (!vision.position.equals("bucketed")) {
                requireInputs(artifact.visionFile, visionGraph, "pos_cols");
            }
            OnnxEngine.Graph embedding = open(artifact.embeddingFile);
            decoder = new EmbedsDecoder(engine, open(artifact.decoderFile), embedding, artifact);
        } catch (ArtifactException e) {
            close();
            throw e;
        }
    }

    private OnnxEngine.Graph open(String file) throws ArtifactException {
        OnnxEngine.Graph g = engine.open(file);
        graphs.add(g);
        return g;
    }

    static void requireInputs(String file, OnnxEngine.Graph g, String... names) throws ArtifactException {
        for (String n : names) {
            if (!g.inputTypes().containsKey(n)) {
                throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, file + " has no input " + n
                        + " (it has " + g.inputTypes().keySet() + "): not the graph this app runs; export the "
                        + "artifact again with edgepack.");
            }
        }
    }

    /** vision.onnx over each slice; the listener hears each slice's time. */
    public Image encode(ImageSlicer.Sliced s, Listener listener) throws ArtifactException {
        int n = s.pixels.length, p = vision.patchSize;
        float[][] embeds = new float[n][];
        double[] ms = new double[n];
        for (int k = 0; k < n; k++) {
            long t0 = System.nanoTime();
            int hPx = s.sizes[k][0], wPx = s.sizes[k][1], h = hPx / p, w = wPx / p;
            Map<String, OnnxEngine.Value> feed = new LinkedHashMap<String, OnnxEngine.Value>();
            try {
                feed.put("pixel_values", engine.floats(s.pixels[k], new long[] {1, 3, hPx, wPx}));
                feed.put("key_pos", engine.floats(VisionInputs.keyPos(vision.embedDim, h, w),
                        new long[] {(long) h * w, vision.embedDim}));
                int g = vision.positionGrid;
                if (vision.position.equals("bucketed")) {
                    feed.put("position_ids", engine.longs(VisionInputs.bucketedIds(h, w, g), new long[] {(long) h * w}));
                } else {
                    feed.put("pos_rows", engine.floats(VisionInputs.aaBicubicMatrix(h, g), new long[] {h, g}));
                    feed.put("pos_cols", engine.floats(VisionInputs.aaBicubicMatrix(w, g), new long[] {w, g}));
                }
                String out = visionGraph.outputNames().get(0);
                OnnxEngine.Value e = visionGraph.run(feed, Collections.singletonList(out)).get(out);
                try {
                    embeds[k] = e.readFloats();
                } finally {
                    e.close();
                }
            } finally {
                for (OnnxEngine.Value v : feed.values()) {
                    v.close();
                }
            }
            if (embeds[k].length != vision.queryNum * vision.embedDim) {
                throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, artifact.visionFile + " gave "
                        + embeds[k].length + " values for a slice, expected " + vision.queryNum + " x " + vision.embedDim);
            }
            ms[k] = (System.nanoTime() - t0) / 1e6;
            if (listener != null) {
                listener.onSliceEncoded(k, n, ms[k]);
            }
        }
        return new Image(embeds, s.grid == null ? null : s.grid.clone(), ms);
    }

    /** A user message's content with the pictures first, as MiniCPM-V's chat does (vision.user_content). */
    public static String userContent(String question, int pictures) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < pictures; i++) {
            b.append(MARK);
        }
        return b.append('\n').append(question).toString();
    }

    /** The prompt ids for messages whose contents hold MARK once per picture, in order (prompt_with_images). */
    public int[] promptIds(List<PromptTokenizer.Message> messages, List<Image> images) throws ArtifactException {
        String text = tok.renderChat(messages);
        List<String> pieces = new ArrayList<String>();
        for (int at = 0; ; ) {
            int next = text.indexOf(MARK, at);
            if (next < 0) {
                pieces.add(text.substring(at));
                break;
            }
            pieces.add(text.substring(at, next));
            at = next + MARK.length();
        }
        if (pieces.size() - 1 != images.size()) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, (pieces.size() - 1)
                    + " picture places in the messages but " + images.size() + " pictures");
        }
        IntList ids = new IntList();
        int bos = tok.bosId();
        String bosText = bos < 0 ? "" : tok.piece(bos);
        int[] first = tok.encode(pieces.get(0));
        if (tok.addsBos() && bos >= 0 && !(!bosText.isEmpty() && pieces.get(0).startsWith(bosText))
                && (first.length == 0 || first[0] != bos)) {
            ids.add(bos);
        }
        ids.addAll(first);
        int row = 0, q = vision.queryNum;
        for (int k = 0; k < images.size(); k++) {
            Image im = images.get(k);
            for (Object part : ImagePrompt.parts(vision, im.grid, k)) {
                if (part instanceof String) {
                    ids.addAll(markerIds((String) part));
                } else {
                    int slice = (Integer) part;
                    for (int r = 0; r < q; r++) {
                        ids.add(-1 - (row + slice * q + r));
                    }
                }
            }
            row += im.slices() * q;
            String after = pieces.get(k + 1);
            if (!after.isEmpty()) {
                ids.addAll(tok.encode(after));
            }
        }
        return ids.toArray();
    }

    /** vision.marker_ids: a marker token's own id; other text tokenized without a leading lone "\u2581". */
    int[] markerIds(String text) throws ArtifactException {
        int id = tok.tokenId(text);
        if (id >= 0) {
            return new int[] {id};
        }
        int[] ids = tok.encode(text);
        if (ids.length > 1 && "\u2581".equals(tok.piece(ids[0]))) {
            return Arrays.copyOfRange(ids, 1, ids.length);
        }
        return ids;
    }

    /** One question about one picture (vision.user_content + the template). */
    public Result ask(String question, Image image, int maxNewTokens, TokenSampler sampler, Listener listener)
            throws ArtifactException {
        List<Image> images = image == null ? Collections.<Image>emptyList() : Collections.singletonList(image);
        String content = image == null ? question : userContent(question, 1);
        return ask(Collections.singletonList(new PromptTokenizer.Message("user", content)), images,
                maxNewTokens, sampler, listener);
    }

    /** Answers the chat messages (MARK in their contents once per image, in order). */
    public Result ask(List<PromptTokenizer.Message> messages, List<Image> images, int maxNewTokens,
                      TokenSampler sampler, Listener listener) throws ArtifactException {
        if (maxNewTokens < 1) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "maxNewTokens must be >= 1, got " + maxNewTokens);
        }
        int[] prompt = promptIds(messages, images);
        int nCtx = artifact.contextLength, rows = 0;
        for (Image im : images) {
            rows += im.slices() * vision.queryNum;
        }
        if (prompt.length == 0) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "the prompt is empty (no tokens)");
        }
        if (prompt.length >= nCtx) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "the prompt is " + prompt.length
                    + " tokens but the context holds " + nCtx + " (at most " + (nCtx - 1) + " leave room for an answer)");
        }
        for (int t : prompt) {
            if (t < -rows || t >= artifact.vocabSize) {
                throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "token id " + t
                        + " is outside the vocabulary (0.." + (artifact.vocabSize - 1) + ")");
            }
        }
        long start = System.nanoTime();
        StreamStats stats = new StreamStats(start);
        int cached = cachedPrefix(prompt, images);
        if (cached == 0) {
            decoder.reset();
        }
        IntList held = new IntList();
        held.addAll(Arrays.copyOf(prompt, cached));
        cachedIds = null;  // unknown while the decoder runs (an error leaves it untrusted)
        stopRequested = false;
        float[] logits = prefill(prompt, cached, images);
        held.addAll(Arrays.copyOfRange(prompt, cached, prompt.length));
        sampler.observe(prompt);
        PromptTokenizer.Stream stream = tok.newStream();
        IntList out = new IntList();
        StringBuilder text = new StringBuilder();
        String finish = "length";
        for (int step = 0; step < maxNewTokens; step++) {
            if (listener != null) {
                listener.onLogits(step, logits);
            }
            int t = sampler.sample(logits);
            if (isEos(t)) {
                finish = "eos";
                break;
            }
            out.add(t);
            sampler.observe(new int[] {t});
            String piece = stream.add(t);
            text.append(piece);
            stats.onToken(piece, System.nanoTime());
            if (listener != null) {
                listener.onToken(t, piece, stats);
            }
            if (step + 1 == maxNewTokens) {
                break;
            }
            if (prompt.length + out.size() > nCtx) {
                finish = "context";
                break;
            }
            if (stopRequested) {
                finish = "stopped";
                break;
            }
            logits = decoder.forwardIds(new int[] {t});
            held.add(t);
        }
        String tail = stream.finish();
        if (!tail.isEmpty()) {
            text.append(tail);
            stats.onText(tail);
            if (listener != null) {
                listener.onText(tail);
            }
        }
        cachedIds = held.toArray();
        cachedImages = new ArrayList<Image>(images);
        return new Result(out.toArray(), text.toString(), finish, prompt.length, prompt.length - cached, stats);
    }

    /** How many prompt ids the cache already holds (CacheState.prepare: a strict prefix, same pictures). */
    private int cachedPrefix(int[] prompt, List<Image> images) {
        int n = cachedIds == null ? -1 : cachedIds.length;
        if (n <= 0 || n >= prompt.length || decoder.nPast() != n || cachedImages.size() > images.size()) {
            return 0;
        }
        for (int i = 0; i < cachedImages.size(); i++) {
            if (cachedImages.get(i) != images.get(i)) {
                return 0;
            }
        }
        for (int i = 0; i < n; i++) {
            if (prompt[i] != cachedIds[i]) {
                return 0;
            }
        }
        return n;
    }

    /** WithImages.forward over prompt[from:]: runs of text ids and runs of image rows, in order. */
    private float[] prefill(int[] prompt, int from, List<Image> images) throws ArtifactException {
        int d = vision.embedDim, q = vision.queryNum;
        float[] last = null;
        int i = from;
        while (i < prompt.length) {
            int j = i;
            boolean rows = prompt[i] < 0;
            while (j < prompt.length && (prompt[j] < 0) == rows) {
                j++;
            }
            if (rows) {
                float[] x = new float[(j - i) * d];
                for (int k = i; k < j; k++) {
                    int r = -1 - prompt[k];
                    float[] src = rowsOf(images, r / q);
                    System.arraycopy(src, (r % q) * d, x, (k - i) * d, d);
                }
                last = decoder.forwardRows(x, j - i);
            } else {
                last = decoder.forwardIds(Arrays.copyOfRange(prompt, i, j));
            }
            i = j;
        }
        return last;
    }

    /** The embeddings of slice number s counted over all pictures. */
    private static float[] rowsOf(List<Image> images, int s) {
        for (Image im : images) {
            if (s < im.slices()) {
                return im.embeds[s];
            }
            s -= im.slices();
        }
        throw new IllegalStateException("image row past the pictures");
    }

    private boolean isEos(int t) {
        for (int e : eos) {
            if (e == t) {
                return true;
            }
        }
        return false;
    }

    /** Ends the running ask after its current step (from any thread); its Result says "stopped". */
    public void stop() {
        stopRequested = true;
    }

    /** Closes the cache and every graph; the memory goes back to the engine. */
    public void close() {
        if (decoder != null) {
            decoder.close();
        }
        for (OnnxEngine.Graph g : graphs) {
            g.close();
        }
        graphs.clear();
        cachedIds = new int[0];
    }

    /** A growable int array (no boxing in the hot path). */
    static final class IntList {
        private int[] a = new int[64];
        private int n;

        void add(int v) {
            if (n == a.length) {
                a = Arrays.copyOf(a, 2 * n);
            }
            a[n++] = v;
        }

        void addAll(int[] vs) {
            for (int v : vs) {
                add(v);
            }
        }

        int size() {
            return n;
        }

        int[] toArray() {
            return Arrays.copyOf(a, n);
        }
    }
}
