package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ArtifactVerifierTest {

    @TempDir
    File tmp;

    File root;

    static final String[][] FILES = {
            {"onnx/model.onnx", "graph bytes"},
            {"onnx/model.onnx.data", "weights weights weights"},
            {"onnx/genai_config.json", "{\"model\": {}}"},
    };

    @BeforeEach
    void writeArtifact() throws Exception {
        root = new File(tmp, "demo-int4");
        StringBuilder files = new StringBuilder();
        for (String[] f : FILES) {
            byte[] data = f[1].getBytes(StandardCharsets.UTF_8);
            write(new File(root, f[0]), data);
            if (files.length() > 0) {
                files.append(",");
            }
            files.append(ArtifactManifestTest.file(f[0], data.length, sha256(data)));
        }
        write(new File(root, ArtifactManifest.FILE_NAME),
                ArtifactManifestTest.manifest(1, files.toString()).getBytes(StandardCharsets.UTF_8));
    }

    static void write(File file, byte[] data) throws IOException {
        file.getParentFile().mkdirs();
        FileOutputStream out = new FileOutputStream(file);
        try {
            out.write(data);
        } finally {
            out.close();
        }
    }

    static String sha256(byte[] data) throws Exception {
        return ArtifactVerifier.hex(MessageDigest.getInstance("SHA-256").digest(data));
    }

    ArtifactException refused() throws IOException {
        try {
            ArtifactVerifier.verify(root, null);
        } catch (ArtifactException e) {
            return e;
        }
        fail("artifact was accepted");
        return null;
    }

    @Test
    void hashesLikeTheStandardVector() throws Exception {
        File f = new File(tmp, "abc");
        write(f, "abc".getBytes(StandardCharsets.UTF_8));
        assertEquals(ArtifactManifestTest.SHA_A, ArtifactVerifier.sha256(f, "abc", null));
    }

    @Test
    void acceptsAnIntactArtifactAndReportsProgress() throws Exception {
        final List<String> seen = new ArrayList<String>();
        ArtifactManifest m = ArtifactVerifier.verify(root, new ArtifactVerifier.Progress() {
            @Override
            public void onProgress(String path, long done, long total) {
                if (done == total) {
                    seen.add(path);
                }
            }
        });
        assertEquals(3, m.onnxFiles.size());
        assertEquals(3, seen.size());
        assertEquals("onnx/model.onnx.data", seen.get(1));
    }

    @Test
    void reportsAMissingFile() throws Exception {
        assertTrue(new File(root, "onnx/model.onnx.data").delete());
        ArtifactException e = refused();
        assertEquals(ArtifactException.Kind.MISSING, e.kind);
        assertTrue(e.getMessage().contains("1 of 3 files are missing: onnx/model.onnx.data"), e.getMessage());
    }

    @Test
    void reportsAPartialPush() throws Exception {
        write(new File(root, "onnx/model.onnx.data"), "weights".getBytes(StandardCharsets.UTF_8));
        ArtifactException e = refused();
        assertEquals(ArtifactException.Kind.PARTIAL, e.kind);
        assertTrue(e.getMessage().contains("onnx/model.onnx.data (7 of 23 bytes)"), e.getMessage());
    }

    @Test
    void reportsACorruptFileOfTheRightSize() throws Exception {
        write(new File(root, "onnx/model.onnx"), "graph bytez".getBytes(StandardCharsets.UTF_8));
        ArtifactException e = refused();
        assertEquals(ArtifactException.Kind.CORRUPT, e.kind);
        assertTrue(e.getMessage().startsWith("onnx/model.onnx is corrupt: its sha256"), e.getMessage());
    }

    @Test
    void reportsAFileThatIsTooLong() throws Exception {
        write(new File(root, "onnx/genai_config.json"), "{\"model\": {}}  ".getBytes(StandardCharsets.UTF_8));
        ArtifactException e = refused();
        assertEquals(ArtifactException.Kind.CORRUPT, e.kind);
        assertTrue(e.getMessage().contains("15 bytes but edgepack.json expects 13"), e.getMessage());
    }

    @Test
    void reportsAFolderWithoutManifest() throws Exception {
        assertTrue(new File(root, ArtifactManifest.FILE_NAME).delete());
        ArtifactException e = refused();
        assertEquals(ArtifactException.Kind.NOT_FOUND, e.kind);
        assertTrue(e.getMessage().contains("edgepack android push"), e.getMessage());
    }

    @Test
    void findsArtifactFoldersNewestFirst() throws Exception {
        File older = new File(tmp, "older");
        write(new File(older, ArtifactManifest.FILE_NAME), "{}".getBytes(StandardCharsets.UTF_8));
        assertTrue(new File(older, ArtifactManifest.FILE_NAME).setLastModified(1000000000000L));
        assertTrue(new File(tmp, "not-an-artifact").mkdirs());
        List<File> found = ArtifactVerifier.findArtifacts(tmp);
        assertEquals(2, found.size());
        assertEquals("demo-int4", found.get(0).getName());
        assertEquals("older", found.get(1).getName());

        assertEquals(root, ArtifactVerifier.findArtifacts(root).get(0));
        assertTrue(ArtifactVerifier.findArtifacts(new File(tmp, "not-an-artifact")).isEmpty());
        assertTrue(ArtifactVerifier.findArtifacts(new File(tmp, "nowhere")).isEmpty());
    }
}
