package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

/**
 * MultimodalChat's bookkeeping against a recording engine (the numbers are checked against
 * onnxruntime by tests/test_android_multimodal.py): pasts are the previous run's presents, the first
 * ones empty float16, the mask covers past + new, long runs come in 128-row pieces, image rows reach
 * the decoder as encoded, EOS stops, a chat's next turn reuses the cache, and nothing stays open.
 */
class MultimodalChatTest {

    static final int D = 8, Q = 64, VOCAB = 40, EOS = 2, STOP_AT = 5;  // EOS once the answer has STOP_AT tokens

    static final class V implements OnnxEngine.Value {
        final String type;
        final long[] shape;
        final float[] f;
        final long[] l;
        boolean closed;
        static int live, reads;

        V(String type, long[] shape, float[] f, long[] l) {
            this.type = type;
            this.shape = shape;
            this.f = f;
            this.l = l;
            live++;
        }

        public String type() {
            return type;
        }

        public long[] shape() {
            return shape.clone();
        }

        public float[] readFloats() {
            assertTrue(!closed && f != null);
            return f.clone();
        }

        public float[] readFloats(long offset, int count) {
            assertTrue(!closed && f != null && offset + count <= f.length);
            reads += count;
            return Arrays.copyOfRange(f, (int) offset, (int) offset + count);
        }

        public long[] readLongs() {
            return l.clone();
        }

        public void close() {
            if (!closed) {
                closed = true;
                live--;
            }
        }
    }

    static final class Run {
        final String graph;
        final Map<String, OnnxEngine.Value> in;
        final Map<String, OnnxEngine.Value> out;

        Run(String graph, Map<String, OnnxEngine.Value> in, Map<String, OnnxEngine.Value> out) {
            this.graph = graph;
            this.in = in;
            this.out = out;
        }
    }

    static class Engine implements OnnxEngine {
        final List<Run> runs = new ArrayList<Run>();
        int openGraphs, answerStart = -1;

        public Graph open(final String file) {
            openGraphs++;
            final Map<String, String> inputs = new LinkedHashMap<String, String>();
            final List<String> outputs = new ArrayList<String>();
            if (file.equals("vision.onnx")) {
                inputs.put("pixel_values", FLOAT);
                inputs.put("position_ids", INT64);
                inputs.put("key_pos", FLOAT);
                outputs.add("image_embeds");
            } else if (file.equals("embedding.onnx")) {
                inputs.put("input_ids", INT64);
                outputs.add("inputs_embeds");
            } else {
                inputs.put("inputs_embeds", FLOAT);
                inputs.put("attention_mask", INT64);
                outputs.add("logits");
                for (int i = 0; i < 2; i++) {
                    inputs.put("past_key_values." + i + ".key", FLOAT16);
                    inputs.put("past_key_values." + i + ".value", FLOAT16);
                    outputs.add("present." + i + ".key");
                    outputs.add("present." + i + ".value");
                }
            }
            return new Graph() {
                public Map<String, String> inputTypes() {
                    return inputs;
                }

                public List<String> outputNames() {
                    return outputs;
                }

                public Map<String, Value> run(Map<String, Value> feed, List<String> wanted) {
                    for (Value v : feed.values()) {
                        assertTrue(!((V) v).closed, "a closed value was fed to " + file);
                    }
                    Map<String, Value> out = new LinkedHashMap<String, Value>();
                    if (file.equals("vision.onnx")) {
                        float[] e = new float[Q * D];
                        Arrays.fill(e, runs.size() + 100);  // slice k's rows: all 100 + k
                        out.put("image_embeds", new V(FLOAT, new long[] {1, Q, D}, e, null));
                    } else if (file.equals("embedding.onnx")) {
                        long[] ids = ((V) feed.get("input_ids")).l;
                        float[] e = new float[ids.length * D];
                        for (int i = 0; i < e.length; i++) {
                            e[i] = -ids[i / D];  // text rows: minus the id
                        }
                        out.put("inputs_embeds", new V(FLOAT, new long[] {1, ids.length, D}, e, null));
                    } else {
                        V x = (V) feed.get("inputs_embeds");
                        int t = (int) x.shape[1], total = ((V) feed.get("attention_mask")).l.length;
                        for (int i = 0; i < 2; i++) {
                            V p = (V) feed.get("past_key_values." + i + ".key");
                            assertEquals(FLOAT16, p.type);
                            assertEquals(total - t, p.shape[2]);
                            out.put("present." + i + ".key", new V(FLOAT16, new long[] {1, 1, total, 4}, null, null));
                            out.put("present." + i + ".value", new V(FLOAT16, new long[] {1, 1, total, 4}, null, null));
                        }
                        float[] logits = new float[t * VOCAB];
                        int next = answerStart >= 0 && total - answerStart + 1 >= STOP_AT + 1 ? EOS : 20 + total % 7;
                        logits[(t - 1) * VOCAB + next] = 1f;
                        out.put("logits", new V(FLOAT, new long[] {1, t, VOCAB}, logits, null));
                    }
                    runs.add(new Run(file, new LinkedHashMap<String, Value>(feed), out));
                    return new LinkedHashMap<String, Value>(out);
                }

                public void close() {
                    openGraphs--;
                }
            };
        }

        public Value floats(float[] data, long[] shape) {
            return new V(FLOAT, shape, data.clone(), null);
        }

        public Value float16(short[] data, long[] shape) {
            return new V(FLOAT16, shape, new float[data.length], null);
        }

        public Value longs(long[] data, long[] shape) {
            return new V(INT64, shape, null, data.clone());
        }

        public void close() {
        }
    }

    /** Characters as ids 20 + c % 20; "<...>" markers as one id each. */
    static final class Tok implements PromptTokenizer {
        static final List<String> MARKERS = Arrays.asList("<image>", "</image>", "<slice>", "</slice>");

        public String renderChat(List<Message> messages) {
            StringBuilder b = new StringBuilder("<s>");
            for (Message m : messages) {
                b.append('[').append(m.role).append(']').append(m.content).append("[end]");
            }
            return b.append("[assistant]").toString();
        }

        public int[] encode(String text) {
            int[] ids = new int[text.length()];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = 20 + text.charAt(i) % 20;
            }
            return ids;
        }

        public int bosId() {
            return 1;
        }

        public boolean addsBos() {
            return true;
        }

        public int tokenId(String text) {
            int k = MARKERS.indexOf(text);
            return k < 0 ? -1 : 3 + k;
        }

        public String piece(int id) {
            return id == 1 ? "<s>" : "x";
        }

        public int[] eosIds() {
            return new int[] {EOS};
        }

        public Stream newStream() {
            return new Stream() {
                public String add(int id) {
                    return String.valueOf((char) (60 + id));  // encodes back to id: 20 + (60 + id) % 20
                }

                public String finish() {
                    return "";
                }
            };
        }
    }

    static MultimodalChat chat(Engine e) throws Exception {
        String manifest = VisionArtifactTest.manifest(true, VisionArtifactTest.MM).replace("\"query_num\":2", "\"query_num\":" + Q)
                .replace("\"use_image_id\":true", "").replace("\"max_slices\":9", "\"max_slices\":9,\"use_image_id\":false");
        File dir = VisionArtifactTest.folder("vision.onnx", "embedding.onnx", "decoder_embeds.onnx");
        String genai = VisionArtifactTest.genai("[2]").replace("\"num_key_value_heads\":1", "\"num_key_value_heads\":1")
                .replace("\"context_length\":64", "\"context_length\":1024");
        return new MultimodalChat(VisionArtifact.parse(manifest, genai, dir), e, new Tok());
    }

    static ImageSlicer.Sliced slices(int n) {
        float[][] px = new float[n][3 * 28 * 28];
        int[][] sizes = new int[n][];
        Arrays.fill(sizes, new int[] {28, 28});
        return new ImageSlicer.Sliced(px, sizes, n == 1 ? null : new int[] {n - 1, 1});
    }

    @Test
    void runsThePromptAndTheAnswerThroughTheCache() throws Exception {
        Engine e = new Engine();
        MultimodalChat c = chat(e);
        assertEquals(3, e.openGraphs);
        MultimodalChat.Image im = c.encode(slices(3), null);  // overview + 2 slices: 192 image rows
        assertEquals(3, e.runs.size());
        int[] prompt = c.promptIds(Arrays.asList(new PromptTokenizer.Message("user", MultimodalChat.userContent("hi", 1))),
                Arrays.asList(im));
        assertEquals(20 + '<' % 20, prompt[0]);  // the template starts with BOS's text "<s>": no BOS id added
        int firstRow = 0;
        while (prompt[firstRow] >= 0) {
            firstRow++;
        }
        assertEquals(3, prompt[firstRow - 1]);  // <image> then the overview's rows -1 .. -64
        assertEquals(-1, prompt[firstRow]);
        assertEquals(-Q, prompt[firstRow + Q - 1]);
        assertEquals(4, prompt[firstRow + Q]);  // </image>

        e.answerStart = prompt.length;
        e.runs.clear();
        V.reads = 0;
        MultimodalChat.Result r = c.ask("hi", im, 50, TokenSampler.greedy(VOCAB), null);
        assertEquals("eos", r.finishReason);
        assertEquals(STOP_AT, r.ids.length);
        assertEquals(prompt.length, r.promptTokens);
        Run prev = null;
        int rows = 0, decodes = 0;
        for (Run run : e.runs) {
            if (!run.graph.equals("decoder_embeds.onnx")) {
                continue;
            }
            decodes++;
            V x = (V) run.in.get("inputs_embeds");
            assertTrue(x.shape[1] <= EmbedsDecoder.PIECE);
            if (x.f[0] >= 100) {  // image rows: the slices' own values, in order
                for (int k = 0; k < x.shape[1]; k++, rows++) {
                    assertEquals(100 + rows / Q, x.f[k * D], 0f);
                }
            }
            for (int i = 0; i < 2; i++) {
                OnnxEngine.Value past = run.in.get("past_key_values." + i + ".key");
                if (prev == null) {
                    assertEquals(0, past.shape()[2]);
                } else {
                    assertSame(prev.out.get("present." + i + ".key"), past);  // fed back, not copied
                }
            }
            prev = run;
        }
        assertEquals(3 * Q, rows);
        assertEquals(decodes * VOCAB, V.reads, "only the last position's logits come into Java");
        assertTrue(decodes >= 3 + 1 + STOP_AT - 1, "prefill pieces (192 rows: two) + text runs + decode steps");
        assertEquals(prompt.length + STOP_AT, ((V) prev.in.get("attention_mask")).l.length);

        // the next turn extends the history: only the new tokens are run
        List<PromptTokenizer.Message> chat = new ArrayList<PromptTokenizer.Message>();
        chat.add(new PromptTokenizer.Message("user", MultimodalChat.userContent("hi", 1)));
        chat.add(new PromptTokenizer.Message("assistant", r.text));
        chat.add(new PromptTokenizer.Message("user", "more"));
        e.answerStart = -1;
        MultimodalChat.Result r2 = c.ask(chat, Arrays.asList(im), 3, TokenSampler.greedy(VOCAB), null);
        assertEquals("length", r2.finishReason);
        assertEquals(r2.promptTokens - (prompt.length + STOP_AT), r2.prefillTokens, "only what follows the answer");
        int cachedRows = prompt.length + STOP_AT;
        Run first = null;
        for (Run run : e.runs) {
            if (first == null && run.graph.equals("decoder_embeds.onnx") && run.in.get("past_key_values.0.key").shape()[2] == cachedRows
                    && ((V) run.in.get("attention_mask")).l.length > cachedRows) {
                first = run;
            }
        }
        assertNotNull(first, "turn 2 starts from the cached rows");
        c.close();
        assertEquals(0, e.openGraphs);
        assertEquals(0, V.live, "values left open");
    }

    @Test
    void stopEndsTheAnswerAfterTheCurrentToken() throws Exception {
        Engine e = new Engine();
        final MultimodalChat c = chat(e);
        MultimodalChat.Image im = c.encode(slices(1), null);
        MultimodalChat.Result r = c.ask("hi", im, 50, TokenSampler.greedy(VOCAB), new MultimodalChat.Listener() {
            @Override
            public void onToken(int id, String text, StreamStats stats) {
                if (stats.tokens() == 3) {
                    c.stop();
                }
            }
        });
        assertEquals("stopped", r.finishReason);
        assertEquals(3, r.ids.length);
        assertEquals("length", c.ask("hi", im, 2, TokenSampler.greedy(VOCAB), null).finishReason);  // the flag is cleared
        c.close();
        assertEquals(0, V.live);
    }

    @Test
    void aGraphWithoutAnExpectedInputIsOneMessage() throws Exception {
        Engine e = new Engine() {
            @Override
            public Graph open(String file) {
                final Graph g = super.open(file);
                if (!file.equals("vision.onnx")) {
                    return g;
                }
                return new Graph() {
                    public Map<String, String> inputTypes() {
                        Map<String, String> m = new LinkedHashMap<String, String>(g.inputTypes());
                        m.remove("key_pos");
                        return m;
                    }

                    public List<String> outputNames() {
                        return g.outputNames();
                    }

                    public Map<String, Value> run(Map<String, Value> in, List<String> out) throws ArtifactException {
                        return g.run(in, out);
                    }

                    public void close() {
                        g.close();
                    }
                };
            }
        };
        try {
            chat(e);
            fail("accepted");
        } catch (ArtifactException x) {
            assertTrue(x.getMessage().startsWith("vision.onnx has no input key_pos"), x.getMessage());
            assertEquals(0, e.openGraphs, "the graphs opened before the check are closed again");
        }
        assertNotNull(e);
    }
}
