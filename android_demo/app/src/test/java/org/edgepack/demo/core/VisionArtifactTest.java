package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.file.Files;

import org.junit.jupiter.api.Test;

class VisionArtifactTest {

    static final String VISION = "{\"version\":\"4.0\",\"position\":\"bucketed\",\"layout\":\"4.0\",\"embed_dim\":8,"
            + "\"patch_size\":14,\"position_grid\":70,\"query_num\":2,\"slice_size\":448,\"max_slices\":9}";

    static String manifest(boolean vision, String multimodal) {
        return "{\"schema\":1,\"model\":{\"name\":\"tiny\",\"config\":{" + (vision ? "\"vision\":" + VISION : "")
                + "}},\"artifacts\":[{\"format\":\"onnx\",\"path\":\"onnx\",\"files\":[]"
                + (multimodal == null ? "" : ",\"multimodal\":" + multimodal) + "}]}";
    }

    static final String MM = "{\"embedding\":\"embedding.onnx\",\"decoder\":\"decoder_embeds.onnx\","
            + "\"vision\":{\"path\":\"vision.onnx\"}}";

    static String genai(String eos) {
        return "{\"model\":{\"vocab_size\":50,\"context_length\":64,\"eos_token_id\":" + eos + ",\"decoder\":{"
                + "\"num_hidden_layers\":2,\"num_key_value_heads\":1,\"head_size\":4,"
                + "\"inputs\":{\"past_key_names\":\"past_key_values.%d.key\",\"past_value_names\":\"past_key_values.%d.value\"},"
                + "\"outputs\":{\"present_key_names\":\"present.%d.key\",\"present_value_names\":\"present.%d.value\"}}}}";
    }

    static File folder(String... files) throws IOException {
        File d = Files.createTempDirectory("va").toFile();
        for (String f : files) {
            new FileOutputStream(new File(d, f)).close();
        }
        return d;
    }

    static String refused(VisionArtifact a, ArtifactException.Kind kind) {
        try {
            a.requirePictures();
        } catch (ArtifactException e) {
            assertEquals(kind, e.kind);
            assertFalse(e.getMessage().contains("\n"));
            return e.getMessage();
        }
        fail("accepted");
        return null;
    }

    @Test
    void readsTheDecoderShapeAndEosIds() throws Exception {
        VisionArtifact a = VisionArtifact.parse(manifest(true, MM), genai("[2, 7]"), folder());
        assertTrue(a.multimodal);
        assertEquals(2, a.layers);
        assertEquals(1, a.kvHeads);
        assertEquals(4, a.headSize);
        assertEquals(50, a.vocabSize);
        assertEquals(64, a.contextLength);
        assertArrayEquals(new int[] {2, 7}, a.eosIds);
        assertEquals("present.%d.value", a.presentValue);
        assertArrayEquals(new int[] {3}, VisionArtifact.parse(manifest(true, MM), genai("3"), folder()).eosIds);
    }

    @Test
    void aCompleteMiniCpmVFolderTakesPictures() throws Exception {
        VisionArtifact.parse(manifest(true, MM), genai("2"),
                folder("vision.onnx", "embedding.onnx", "decoder_embeds.onnx")).requirePictures();
    }

    @Test
    void aTextModelIsRefusedWithOneLine() throws Exception {
        String m = refused(VisionArtifact.parse(manifest(false, null), genai("2"), folder()),
                ArtifactException.Kind.UNSUPPORTED);
        assertTrue(m.contains("(tiny) is a text model") && m.contains("cannot answer about a picture"), m);
    }

    @Test
    void aMiniCpmVWithoutItsVisionHalfIsRefused() throws Exception {
        String m = refused(VisionArtifact.parse(manifest(true, null), genai("2"), folder()), ArtifactException.Kind.MISSING);
        assertTrue(m.contains("without its vision half"), m);
        m = refused(VisionArtifact.parse(manifest(true, "{\"embedding\":\"embedding.onnx\"}"), genai("2"), folder()),
                ArtifactException.Kind.MISSING);
        assertTrue(m.contains("without its vision half"), m);
        m = refused(VisionArtifact.parse(manifest(true, MM), genai("2"), folder("embedding.onnx", "decoder_embeds.onnx")),
                ArtifactException.Kind.MISSING);
        assertTrue(m.contains("vision.onnx is not in"), m);
    }

    @Test
    void badJsonIsAnInvalidManifest() {
        try {
            VisionArtifact.parse(manifest(true, MM), "{\"model\":{}}", new File("."));
            fail("accepted");
        } catch (ArtifactException e) {
            assertEquals(ArtifactException.Kind.INVALID_MANIFEST, e.kind);
            assertTrue(e.getMessage().contains("genai_config.json"), e.getMessage());
        }
    }
}
