package org.edgepack.demo.core;

import java.util.ArrayList;
import java.util.List;

/**
 * Turns decoded pieces into the text shown on screen. Text that might be the start of a stop
 * string (say "<|im_" before "end|>") is held back until it is known not to be one; a stop string
 * ends the stream and is never shown.
 */
public final class StreamAssembler {

    private final List<String> stopStrings;
    private final StringBuilder shown = new StringBuilder();
    private String pending = "";
    private boolean stopped;

    public StreamAssembler(List<String> stopStrings) {
        this.stopStrings = new ArrayList<String>();
        for (String s : stopStrings) {
            if (!s.isEmpty()) {
                this.stopStrings.add(s);
            }
        }
    }

    /** Adds one decoded piece and returns the text that became safe to show (maybe ""). */
    public String add(String piece) {
        if (stopped) {
            return "";
        }
        pending = pending + piece;
        int stopAt = -1;
        for (String stop : stopStrings) {
            int at = pending.indexOf(stop);
            if (at >= 0 && (stopAt < 0 || at < stopAt)) {
                stopAt = at;
            }
        }
        if (stopAt >= 0) {
            stopped = true;
            return emit(pending.substring(0, stopAt), "");
        }
        int hold = longestStopPrefixSuffix(pending);
        return emit(pending.substring(0, pending.length() - hold), pending.substring(pending.length() - hold));
    }

    /** The stream ended without a stop string: whatever was held back is text after all. */
    public String finish() {
        if (stopped) {
            return "";
        }
        return emit(pending, "");
    }

    public boolean stopped() {
        return stopped;
    }

    public String text() {
        return shown.toString();
    }

    private String emit(String out, String keep) {
        shown.append(out);
        pending = keep;
        return out;
    }

    /** Length of the longest suffix of s that is a proper prefix of some stop string. */
    private int longestStopPrefixSuffix(String s) {
        int best = 0;
        for (String stop : stopStrings) {
            int max = Math.min(stop.length() - 1, s.length());
            for (int n = max; n > best; n--) {
                if (s.regionMatches(s.length() - n, stop, 0, n)) {
                    best = n;
                    break;
                }
            }
        }
        return best;
    }
}
