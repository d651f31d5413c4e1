package org.edgepack.demo.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * Finds artifact folders and checks every file of the onnx entry against edgepack.json: present,
 * the right size, the right sha256. Nothing is loaded before this passes.
 */
public final class ArtifactVerifier {

    /** Called while hashing, from the thread that verifies. */
    public interface Progress {
        void onProgress(String path, long bytesDone, long bytesTotal);
    }

    private static final int BUFFER_BYTES = 1 << 20;
    private static final int MAX_LISTED = 3;

    private ArtifactVerifier() {
    }

    /**
     * Artifact folders under dir, newest first: dir itself when it holds edgepack.json,
     * otherwise each subfolder that does.
     */
    public static List<File> findArtifacts(File dir) {
        List<File> found = new ArrayList<File>();
        if (dir == null || !dir.isDirectory()) {
            return found;
        }
        if (new File(dir, ArtifactManifest.FILE_NAME).isFile()) {
            found.add(dir);
            return found;
        }
        File[] children = dir.listFiles();
        if (children == null) {
            return found;
        }
        for (File child : children) {
            if (child.isDirectory() && new File(child, ArtifactManifest.FILE_NAME).isFile()) {
                found.add(child);
            }
        }
        File[] sorted = found.toArray(new File[0]);
        Arrays.sort(sorted, new Comparator<File>() {
            @Override
            public int compare(File a, File b) {
                long ta = new File(a, ArtifactManifest.FILE_NAME).lastModified();
                long tb = new File(b, ArtifactManifest.FILE_NAME).lastModified();
                if (ta != tb) {
                    return ta > tb ? -1 : 1;
                }
                return a.getName().compareTo(b.getName());
            }
        });
        return new ArrayList<File>(Arrays.asList(sorted));
    }

    public static ArtifactManifest readManifest(File root) throws ArtifactException, IOException {
        File manifestFile = new File(root, ArtifactManifest.FILE_NAME);
        if (!manifestFile.isFile()) {
            throw new ArtifactException(ArtifactException.Kind.NOT_FOUND,
                    "No edgepack.json in " + root + ": this folder is not an edgepack artifact. "
                            + "Push one with: edgepack android push ARTIFACT");
        }
        return ArtifactManifest.parse(readUtf8(manifestFile));
    }

    /** Reads the manifest and checks every onnx file; returns the manifest when all match. */
    public static ArtifactManifest verify(File root, Progress progress) throws ArtifactException, IOException {
        ArtifactManifest manifest = readManifest(root);
        checkSizes(root, manifest);
        for (ArtifactManifest.FileEntry entry : manifest.onnxFiles) {
            String actual = sha256(new File(root, entry.path), entry.path, progress);
            if (!actual.equals(entry.sha256)) {
                throw new ArtifactException(ArtifactException.Kind.CORRUPT,
                        entry.path + " is corrupt: its sha256 is " + actual + " but edgepack.json "
                                + "expects " + entry.sha256 + ". Push the artifact again.");
            }
        }
        return manifest;
    }

    /** Cheap checks first, so a missing or half-pushed file is reported without hashing anything. */
    private static void checkSizes(File root, ArtifactManifest manifest) throws ArtifactException {
        List<String> missing = new ArrayList<String>();
        List<String> partial = new ArrayList<String>();
        for (ArtifactManifest.FileEntry entry : manifest.onnxFiles) {
            File file = new File(root, entry.path);
            if (!file.isFile()) {
                missing.add(entry.path);
            } else if (file.length() < entry.bytes) {
                partial.add(entry.path + " (" + file.length() + " of " + entry.bytes + " bytes)");
            } else if (file.length() > entry.bytes) {
                throw new ArtifactException(ArtifactException.Kind.CORRUPT,
                        entry.path + " is corrupt: it has " + file.length() + " bytes but "
                                + "edgepack.json expects " + entry.bytes + ". Push the artifact again.");
            }
        }
        if (!missing.isEmpty()) {
            throw new ArtifactException(ArtifactException.Kind.MISSING,
                    "The artifact is incomplete: " + missing.size() + " of "
                            + manifest.onnxFiles.size() + " files are missing: " + listed(missing)
                            + ". Push it again with edgepack android push ARTIFACT.");
        }
        if (!partial.isEmpty()) {
            throw new ArtifactException(ArtifactException.Kind.PARTIAL,
                    "The artifact is only partly copied: " + listed(partial)
                            + ". The push did not finish; run edgepack android push ARTIFACT again.");
        }
    }

    private static String listed(List<String> items) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < items.size() && i < MAX_LISTED; i++) {
            if (i > 0) {
                sb.append(", ");
            }
            sb.append(items.get(i));
        }
        if (items.size() > MAX_LISTED) {
            sb.append(" and ").append(items.size() - MAX_LISTED).append(" more");
        }
        return sb.toString();
    }

    public static String sha256(File file, String label, Progress progress) throws IOException {
        MessageDigest digest;
        try {
            digest = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        long total = file.length();
        long done = 0;
        byte[] buffer = new byte[BUFFER_BYTES];
        InputStream in = new FileInputStream(file);
        try {
            int n;
            while ((n = in.read(buffer)) > 0) {
                digest.update(buffer, 0, n);
                done += n;
                if (progress != null) {
                    progress.onProgress(label, done, total);
                }
            }
        } finally {
            in.close();
        }
        return hex(digest.digest());
    }

    static String hex(byte[] bytes) {
        char[] digits = "0123456789abcdef".toCharArray();
        char[] out = new char[bytes.length * 2];
        for (int i = 0; i < bytes.length; i++) {
            out[2 * i] = digits[(bytes[i] >> 4) & 0xf];
            out[2 * i + 1] = digits[bytes[i] & 0xf];
        }
        return new String(out);
    }

    public static String readUtf8(File file) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[8192];
        InputStream in = new FileInputStream(file);
        try {
            int n;
            while ((n = in.read(buffer)) > 0) {
                out.write(buffer, 0, n);
            }
        } finally {
            in.close();
        }
        return new String(out.toByteArray(), "UTF-8");
    }
}
