package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import org.junit.jupiter.api.Test;

class ArtifactManifestTest {

    static final String SHA_A = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /** A schema-1 manifest with an onnx entry listing the given file entries (JSON objects). */
    static String manifest(int schema, String onnxFiles) {
        return "{\"schema\": " + schema + ", \"edgepack_version\": \"0.1.0\","
                + " \"model\": {\"name\": \"demo\", \"hidden_size\": 576, \"future\": [1, 2]},"
                + " \"tokenizer\": {\"kind\": \"sentencepiece\", \"chat_template\": \"{{'<|im_start|>'}}\"},"
                + " \"some_new_field\": {\"x\": 1},"
                + " \"artifacts\": ["
                + "  {\"format\": \"gguf\", \"path\": \"gguf/model-Q4_0.gguf\", \"files\": ["
                + "     {\"path\": \"gguf/model-Q4_0.gguf\", \"bytes\": 10, \"sha256\": \"" + SHA_A + "\"}]},"
                + "  {\"format\": \"onnx\", \"path\": \"onnx\", \"files\": [" + onnxFiles + "],"
                + "   \"quantization\": {\"scheme\": \"int4\", \"bits\": 4}, \"fidelity\": {\"ppl\": 20.1}}"
                + " ]}";
    }

    static String file(String path, long bytes, String sha) {
        return "{\"path\": \"" + path + "\", \"bytes\": " + bytes + ", \"sha256\": \"" + sha + "\"}";
    }

    static ArtifactException refused(String json) {
        try {
            ArtifactManifest.parse(json);
        } catch (ArtifactException e) {
            return e;
        }
        fail("manifest was accepted: " + json);
        return null;
    }

    @Test
    void readsTheOnnxEntry() throws Exception {
        ArtifactManifest m = ArtifactManifest.parse(manifest(1,
                file("onnx/model.onnx", 3, SHA_A) + "," + file("onnx/genai_config.json", 7, SHA_A.toUpperCase())));
        assertEquals(1, m.schema);
        assertEquals("0.1.0", m.edgepackVersion);
        assertEquals("demo", m.modelName);
        assertEquals("onnx", m.onnxPath);
        assertEquals(2, m.onnxFiles.size());
        assertEquals("onnx/model.onnx", m.onnxFiles.get(0).path);
        assertEquals(3, m.onnxFiles.get(0).bytes);
        assertEquals(SHA_A, m.onnxFiles.get(1).sha256);
        assertEquals(10, m.totalBytes());
        assertEquals("{{'<|im_start|>'}}", m.chatTemplate);
    }

    @Test
    void readsTheArm64FidelityWhenRecorded() throws Exception {
        String kernels = "\"kernels\": {\"arch\": \"aarch64\", \"engine\": \"onnxruntime 1.29.0\", "
                + "\"accuracy_level\": 1, \"flags\": [\"asimddp\", \"i8mm\"]}";
        String withArm = manifest(1, file("onnx/model.onnx", 3, SHA_A)).replace(
                "\"fidelity\": {\"ppl\": 20.1}",
                "\"fidelity\": {\"ppl\": 20.1, \"ppl_increase_pct\": 12.9, \"top1_agreement\": 0.718, \"tokens\": 256},"
                        + " \"fidelity_arm64\": {\"ppl_increase_pct\": 13.69, \"top1_agreement\": 0.686,"
                        + " \"tokens\": 256, " + kernels + "}");
        ArtifactManifest m = ArtifactManifest.parse(withArm);
        assertEquals(12.9, m.fidelity.pplIncreasePct, 1e-9);
        assertEquals("", m.fidelity.arch);
        assertEquals(-1, m.fidelity.accuracyLevel);
        assertEquals("aarch64", m.fidelityArm64.arch);
        assertEquals(1, m.fidelityArm64.accuracyLevel);
        assertEquals(256, m.fidelityArm64.tokens);
        assertEquals("aarch64 (onnxruntime 1.29.0): \u0394ppl +13.7%, top-1 68.6% on 256 tokens",
                m.fidelityArm64.summary());
        ArtifactManifest old = ArtifactManifest.parse(manifest(1, file("onnx/model.onnx", 3, SHA_A)));
        assertNull(old.fidelityArm64);
        assertNull(old.fidelity);  // {"ppl": 20.1} alone: no figures to show
        assertEquals("Fidelity on arm64 kernels: " + m.fidelityArm64.summary(), m.fidelityLine());
        assertEquals("", old.fidelityLine());
        ArtifactManifest x86 = ArtifactManifest.parse(manifest(1, file("onnx/model.onnx", 3, SHA_A)).replace(
                "\"fidelity\": {\"ppl\": 20.1}",
                "\"fidelity\": {\"ppl\": 20.1, \"ppl_increase_pct\": 12.9, \"top1_agreement\": 0.718, \"tokens\": 256}"));
        assertNull(x86.fidelityArm64);
        assertEquals("Fidelity (not checked on arm64 kernels): \u0394ppl +12.9%, top-1 71.8% on 256 tokens",
                x86.fidelityLine());
    }

    @Test
    void refusesANewerSchema() {
        ArtifactException e = refused(manifest(2, file("onnx/model.onnx", 3, SHA_A)));
        assertEquals(ArtifactException.Kind.UNSUPPORTED, e.kind);
        assertTrue(e.getMessage().contains("schema 2"), e.getMessage());
        assertTrue(e.getMessage().contains("Update the app"), e.getMessage());
    }

    @Test
    void refusesAManifestWithoutSchema() {
        ArtifactException e = refused("{\"artifacts\": []}");
        assertEquals(ArtifactException.Kind.INVALID_MANIFEST, e.kind);
        assertTrue(e.getMessage().contains("schema"), e.getMessage());
    }

    @Test
    void refusesAnArtifactWithoutOnnx() {
        ArtifactException e = refused("{\"schema\": 1, \"artifacts\": [{\"format\": \"gguf\", "
                + "\"path\": \"gguf/m.gguf\", \"files\": []}]}");
        assertEquals(ArtifactException.Kind.INVALID_MANIFEST, e.kind);
        assertTrue(e.getMessage().contains("--format onnx"), e.getMessage());
        assertTrue(e.getMessage().contains("gguf"), e.getMessage());
    }

    @Test
    void refusesTextThatIsNotJson() {
        ArtifactException e = refused("{\"schema\": 1, \"artifacts\": [");
        assertEquals(ArtifactException.Kind.INVALID_MANIFEST, e.kind);
        assertTrue(e.getMessage().startsWith("edgepack.json is not a valid manifest"), e.getMessage());
    }

    @Test
    void refusesPathsOutsideTheArtifact() {
        String[] bad = {"../model.onnx", "/sdcard/x", "onnx/../../x", "onnx//x", "onnx\\\\x", "./x", ""};
        for (String path : bad) {
            ArtifactException e = refused(manifest(1, file(path, 1, SHA_A)));
            assertEquals(ArtifactException.Kind.INVALID_MANIFEST, e.kind, path);
        }
    }

    @Test
    void refusesBadHashesAndSizes() {
        assertEquals(ArtifactException.Kind.INVALID_MANIFEST,
                refused(manifest(1, file("onnx/a", 1, "abc"))).kind);
        assertEquals(ArtifactException.Kind.INVALID_MANIFEST,
                refused(manifest(1, file("onnx/a", -1, SHA_A))).kind);
        assertEquals(ArtifactException.Kind.INVALID_MANIFEST, refused(manifest(1, "")).kind);
    }
}
