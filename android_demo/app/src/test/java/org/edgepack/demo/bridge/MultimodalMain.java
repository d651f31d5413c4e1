package org.edgepack.demo.bridge;

import java.awt.image.BufferedImage;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;

import javax.imageio.ImageIO;
import javax.imageio.ImageReader;
import javax.imageio.stream.ImageInputStream;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.Exif;
import org.edgepack.demo.core.ImageLimits;
import org.edgepack.demo.core.ImageSlicer;
import org.edgepack.demo.core.MultimodalChat;
import org.edgepack.demo.core.RgbImage;
import org.edgepack.demo.core.TokenSampler;
import org.edgepack.demo.core.VisionArtifact;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * The app's picture path on the JVM, for tests/test_android_multimodal.py:
 *
 *     java ... MultimodalMain ARTIFACT IMAGE|- QUESTION MAX_TOKENS PYTHON BRIDGE_SCRIPT THREADS [QUESTION2]
 *
 * Reads the picture as the app does (size checked first, ARGB pixels, EXIF orientation from the
 * file's first 64 KiB), slices it with core's ImageSlicer, and answers greedily with core's
 * MultimodalChat over PyBridge (onnxruntime 1.29.0 in Python). Prints one JSON object: ids, text,
 * the prompt ids, slices, grid, encode ms, TTFT, decode tok/s and the bridge's bookkeeping. An
 * ArtifactException is one "edgepack: error: ..." line on stderr, exit 2.
 */
public final class MultimodalMain {

    public static void main(String[] args) throws Exception {
        String artifact = args[0], image = args[1], question = args[2];
        int maxTokens = Integer.parseInt(args[3]);
        PyBridge bridge = new PyBridge(args[4], args[5], artifact, Integer.parseInt(args[6]));
        JSONObject res = new JSONObject();
        int status = 0;
        MultimodalChat chat = null;
        try {
            VisionArtifact a = VisionArtifact.read(new File(artifact));
            MultimodalChat.Image encoded = null;
            if (!image.equals("-")) {
                a.requirePictures();  // the app asks before it decodes a picture for this artifact
            }
            chat = new MultimodalChat(a, bridge, bridge);
            if (!image.equals("-")) {
                ImageSlicer.Sliced s = ImageSlicer.slice(read(new File(image)), chat.vision);
                encoded = chat.encode(s, null);
                res.put("grid", s.grid == null ? JSONObject.NULL : new JSONArray(Arrays.asList(s.grid[0], s.grid[1])));
                res.put("slices", encoded.slices());
                res.put("encode_ms", new JSONArray(encoded.encodeMs));
            }
            final JSONArray logits = new JSONArray();
            MultimodalChat.Listener listener = new MultimodalChat.Listener() {
                @Override
                public void onLogits(int step, float[] x) {
                    JSONArray row = new JSONArray();
                    for (float f : x) {
                        try {
                            row.put((double) f);
                        } catch (org.json.JSONException e) {
                            throw new IllegalStateException(e);
                        }
                    }
                    logits.put(row);
                }
            };
            MultimodalChat.Result r = chat.ask(question, encoded, maxTokens, TokenSampler.greedy(a.vocabSize), listener);
            res.put("logits", logits);
            res.put("ids", new JSONArray(r.ids)).put("text", r.text).put("finish", r.finishReason)
                    .put("prompt_tokens", r.promptTokens)
                    .put("prompt_ids", new JSONArray(chat.promptIds(java.util.Collections.singletonList(
                            new org.edgepack.demo.core.PromptTokenizer.Message("user", encoded == null ? question
                                    : MultimodalChat.userContent(question, 1))),
                            encoded == null ? java.util.Collections.<MultimodalChat.Image>emptyList()
                                    : java.util.Collections.singletonList(encoded))))
                    .put("ttft_s", r.stats.ttftSeconds()).put("decode_tok_s", r.stats.tokensPerSecond())
                    .put("meter", r.stats.summary());
            if (args.length > 7) {  // a second turn: the history re-rendered, the cache reused where it holds a prefix
                java.util.List<org.edgepack.demo.core.PromptTokenizer.Message> chatLog =
                        new java.util.ArrayList<org.edgepack.demo.core.PromptTokenizer.Message>();
                chatLog.add(new org.edgepack.demo.core.PromptTokenizer.Message("user",
                        encoded == null ? question : MultimodalChat.userContent(question, 1)));
                chatLog.add(new org.edgepack.demo.core.PromptTokenizer.Message("assistant", r.text));
                chatLog.add(new org.edgepack.demo.core.PromptTokenizer.Message("user", args[7]));
                MultimodalChat.Result r2 = chat.ask(chatLog, encoded == null
                        ? java.util.Collections.<MultimodalChat.Image>emptyList() : java.util.Collections.singletonList(encoded),
                        maxTokens, TokenSampler.greedy(a.vocabSize), null);
                res.put("turn2", new JSONObject().put("ids", new JSONArray(r2.ids)).put("text", r2.text)
                        .put("prompt_tokens", r2.promptTokens).put("prefill_tokens", r2.prefillTokens));
            }
        } catch (ArtifactException e) {
            System.err.println("edgepack: error: " + e.getMessage());
            status = 2;
        }
        res.put("bridge_before_close", bridge.stats());
        if (chat != null) {
            chat.close();
        }
        res.put("bridge_after_close", bridge.stats());
        bridge.close();
        System.out.println(res.toString());
        System.exit(status);
    }

    /** As the app: bounds first (ImageLimits before decoding), then pixels, then the EXIF orientation. */
    static RgbImage read(File f) throws IOException, ArtifactException {
        ImageInputStream iis = ImageIO.createImageInputStream(f);
        java.util.Iterator<ImageReader> readers = iis == null ? null : ImageIO.getImageReaders(iis);
        if (readers == null || !readers.hasNext()) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, f.getName() + " is not a picture");
        }
        ImageReader reader = readers.next();
        reader.setInput(iis);
        ImageLimits.check(reader.getWidth(0), reader.getHeight(0));
        BufferedImage im = reader.read(0);
        iis.close();
        int w = im.getWidth(), h = im.getHeight();
        int[] argb = im.getRGB(0, 0, w, h, null, 0, w);
        byte[] head = new byte[65536];
        InputStream in = new FileInputStream(f);
        int n = 0;
        try {
            for (int k; n < head.length && (k = in.read(head, n, head.length - n)) > 0; ) {
                n += k;
            }
        } finally {
            in.close();
        }
        return RgbImage.fromArgb(argb, w, h).orient(Exif.orientation(Arrays.copyOf(head, n)));
    }
}
