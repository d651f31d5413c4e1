package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.util.Arrays;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.Test;

class PictureRouteTest {

    static final String SHA = "0000000000000000000000000000000000000000000000000000000000000000";

    /** A manifest whose onnx entry lists files (path, bytes) under onnx/. */
    static String manifest(boolean vision, boolean multimodal, Object... files) {
        StringBuilder list = new StringBuilder();
        for (int i = 0; i < files.length; i += 2) {
            list.append(i == 0 ? "" : ",").append("{\"path\":\"onnx/").append(files[i]).append("\",\"bytes\":")
                    .append(files[i + 1]).append(",\"sha256\":\"").append(SHA).append("\"}");
        }
        return "{\"schema\":1,\"model\":{\"name\":\"tiny\",\"config\":{" + (vision ? "\"vision\":" + VisionArtifactTest.VISION : "")
                + "}},\"artifacts\":[{\"format\":\"onnx\",\"path\":\"onnx\",\"files\":[" + list + "]"
                + (multimodal ? ",\"multimodal\":" + VisionArtifactTest.MM : "") + "}]}";
    }

    static final Object[] V_FILES = {"model.onnx", 1000, "model.onnx.data", 50000, "embedding.onnx", 300,
        "decoder_embeds.onnx", 400, "vision.onnx", 500, "vision.onnx.data", 7000, "genai_config.json", 10};

    static PictureRoute route(String manifestJson, File onnxDir) throws Exception {
        return PictureRoute.choose(ArtifactManifest.parse(manifestJson),
                VisionArtifact.parse(manifestJson, VisionArtifactTest.genai("2"), onnxDir));
    }

    @Test
    void aMiniCpmVArtifactRunsThePictureLoopAndLoadsAllButGenaisTextGraph() throws Exception {
        File dir = VisionArtifactTest.folder("vision.onnx", "embedding.onnx", "decoder_embeds.onnx");
        PictureRoute r = route(manifest(true, true, V_FILES), dir);
        assertTrue(r.pictures);
        assertNull(r.pictureRefusal);
        r.requirePictures();
        assertEquals(50000 + 300 + 400 + 500 + 7000 + 10, r.bytesToLoad);  // model.onnx (1000) is genai's, not loaded
        assertEquals(EngineSetup.memoryNeeded(r.bytesToLoad), r.memoryNeeded());
        assertEquals("onnxruntime (picture loop)", r.engineName());
    }

    @Test
    void aTextArtifactKeepsGenaiAndRefusesAPictureInOneLine() throws Exception {
        PictureRoute r = route(manifest(false, false, "model.onnx", 1000, "model.onnx.data", 50000),
                VisionArtifactTest.folder());
        assertFalse(r.pictures);
        assertEquals(51000, r.bytesToLoad);  // as before: every file of the onnx entry
        assertEquals("onnxruntime-genai", r.engineName());
        String m = refusal(r);
        assertTrue(m.contains("is a text model") && m.contains("MiniCPM-V"), m);
    }

    @Test
    void aMiniCpmVArtifactWithoutItsVisionHalfKeepsGenaiForTextAndSaysSoForAPicture() throws Exception {
        PictureRoute noEntry = route(manifest(true, false, "model.onnx", 1000), VisionArtifactTest.folder());
        assertFalse(noEntry.pictures);
        assertTrue(refusal(noEntry).contains("without its vision half"), noEntry.pictureRefusal);

        File dir = VisionArtifactTest.folder("embedding.onnx", "decoder_embeds.onnx");  // vision.onnx deleted
        PictureRoute noFile = route(manifest(true, true, V_FILES), dir);
        assertFalse(noFile.pictures);
        assertTrue(refusal(noFile).contains("vision.onnx is not in"), noFile.pictureRefusal);
    }

    @Test
    void aFileThatIsNoPictureAndA64MpxPictureAreRefusedFromTheirBounds() throws Exception {
        String no = badPicture("notes.pdf", -1, -1);
        assertTrue(no.startsWith("notes.pdf is not a picture this phone can decode"), no);
        String big = badPicture("pano.jpg", 8001, 8000);
        assertEquals("pano.jpg: refused before decoding: 8001x8000 is 64 Mpx, more than the 64 Mpx limit", big);
        assertTrue(badPicture("dot.png", 1, 1).contains("too small"));
        PictureRoute.checkPicture("ok.jpg", 8000, 8000);  // exactly 64 Mpx is allowed, as image.py
        PictureRoute.checkPicture("ok.jpg", 2, 2);
        assertTrue(PictureRoute.undecodable("x.jpg").startsWith("x.jpg: the picture is truncated or corrupt"));
    }

    @Test
    void theTokenizerOverlayPointsGenaisDecoderAtTheEmbeddingGraph() throws Exception {
        JSONObject dec = new JSONObject(PictureRoute.tokenizerOverlay(3, "embedding.onnx"))
                .getJSONObject("model").getJSONObject("decoder");
        assertEquals("embedding.onnx", dec.getString("filename"));
        assertEquals(3, dec.getJSONObject("session_options").getInt("intra_op_num_threads"));
        JSONArray m = new JSONArray(PictureRoute.messagesJson(Arrays.asList(
                new PromptTokenizer.Message("user", MultimodalChat.userContent("What is it?", 1)))));
        assertEquals(1, m.length());
        assertEquals("user", m.getJSONObject(0).getString("role"));
        assertEquals(MultimodalChat.userContent("What is it?", 1), m.getJSONObject(0).getString("content"));
    }

    @Test
    void specialTokensAsTokenizerConfigSpellsThem() {
        assertEquals("<s>", PictureRoute.specialToken("{\"bos_token\":\"<s>\"}", "bos_token"));
        assertEquals("<unk>", PictureRoute.specialToken("{\"unk_token\":{\"content\":\"<unk>\",\"lstrip\":false}}",
                "unk_token"));
        assertEquals("", PictureRoute.specialToken("{\"bos_token\":null}", "bos_token"));
        assertEquals("", PictureRoute.specialToken("not json", "bos_token"));
        assertEquals("", PictureRoute.specialToken(null, "bos_token"));
    }

    @Test
    void theEncodeLineForTheScreen() {
        assertEquals("encode 3 slices in 900 ms (300 ms/slice)", PictureRoute.encodeSummary(new double[] {250, 300, 350}));
        assertEquals("encode 1 slice in 42 ms (42 ms/slice)", PictureRoute.encodeSummary(new double[] {42}));
    }

    static String refusal(PictureRoute r) {
        try {
            r.requirePictures();
        } catch (ArtifactException e) {
            assertFalse(e.getMessage().contains("\n"));
            return e.getMessage();
        }
        fail("accepted a picture");
        return null;
    }

    static String badPicture(String name, int w, int h) {
        try {
            PictureRoute.checkPicture(name, w, h);
        } catch (ArtifactException e) {
            assertEquals(ArtifactException.Kind.BAD_IMAGE, e.kind);
            return e.getMessage();
        }
        fail("accepted " + w + "x" + h);
        return null;
    }
}
