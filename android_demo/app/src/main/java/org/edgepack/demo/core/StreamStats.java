package org.edgepack.demo.core;

/**
 * Live figures for one answer. Like llama2.c's run loop, the decode clock starts at the first
 * token: tokens/s is (tokens - 1) over the time from the first token to the latest, and the
 * speech meter is read over the same window. Times are System.nanoTime() values.
 */
public final class StreamStats {

    private final long startNanos;
    private long firstNanos = -1;
    private long lastNanos = -1;
    private int tokens;
    private final SpeechMeter meter = new SpeechMeter();

    public StreamStats(long startNanos) {
        this.startNanos = startNanos;
    }

    /** One generated token and the text it made visible (may be ""). */
    public void onToken(String visibleText, long nowNanos) {
        if (tokens == 0) {
            firstNanos = nowNanos;
        }
        tokens++;
        lastNanos = nowNanos;
        meter.add(visibleText);
    }

    /** Text shown after the last token (held-back text released at the end). */
    public void onText(String visibleText) {
        meter.add(visibleText);
    }

    public int tokens() {
        return tokens;
    }

    public double ttftSeconds() {
        return tokens == 0 ? 0 : (firstNanos - startNanos) / 1e9;
    }

    public double decodeSeconds() {
        return tokens < 2 ? 0 : (lastNanos - firstNanos) / 1e9;
    }

    public double tokensPerSecond() {
        double s = decodeSeconds();
        return s <= 0 ? 0 : (tokens - 1) / s;
    }

    public double speechRatio() {
        return meter.ratio(decodeSeconds());
    }

    public SpeechMeter meter() {
        return meter;
    }

    /** One line for the screen, e.g. "24.1 tok/s · 3.2× human speech (8.0 words/s) · TTFT 0.41 s". */
    public String summary() {
        double seconds = decodeSeconds();
        return String.format(java.util.Locale.ROOT, "%.1f tok/s \u00b7 %.1f\u00d7 human speech (%.1f %s/s) \u00b7 TTFT %.2f s \u00b7 %d tokens",
                tokensPerSecond(), speechRatio(), meter.unitsPerSecond(seconds), meter.unitName(),
                ttftSeconds(), tokens);
    }
}
