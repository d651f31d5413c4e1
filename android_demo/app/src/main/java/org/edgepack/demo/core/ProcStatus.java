package org.edgepack.demo.core;

import java.io.File;
import java.io.IOException;

/**
 * Memory figures of this process from /proc/self/status (Linux, hence Android): VmHWM is the peak
 * resident set size, VmRSS the current one. The kernel prints them in kB (1024 bytes).
 */
public final class ProcStatus {

    public static final File SELF = new File("/proc/self/status");

    public final long peakRssBytes;
    public final long rssBytes;

    private ProcStatus(long peakRssBytes, long rssBytes) {
        this.peakRssBytes = peakRssBytes;
        this.rssBytes = rssBytes;
    }

    /** Parses the text of a status file; a missing field is -1. */
    public static ProcStatus parse(String text) {
        return new ProcStatus(field(text, "VmHWM"), field(text, "VmRSS"));
    }

    public static ProcStatus read() throws IOException {
        return parse(ArtifactVerifier.readUtf8(SELF));
    }

    static long field(String text, String name) {
        for (String line : text.split("\n")) {
            if (line.startsWith(name + ":")) {
                String[] parts = line.substring(name.length() + 1).trim().split("\\s+");
                try {
                    long value = Long.parseLong(parts[0]);
                    return parts.length > 1 && parts[1].equalsIgnoreCase("kB") ? value * 1024 : value;
                } catch (NumberFormatException e) {
                    return -1;
                }
            }
        }
        return -1;
    }
}
