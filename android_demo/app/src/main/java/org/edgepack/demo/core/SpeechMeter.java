package org.edgepack.demo.core;

/**
 * Counts what a listener would hear in streamed text: words (runs of letters or digits outside
 * CJK) and CJK characters, never tokens. Text may arrive in any pieces: a word split across two
 * pieces is counted once.
 *
 * The ratio compares with the human rate of the dominant script (the one with more characters):
 * conversational English is about 2.5 words/s, read Mandarin about 5.2 characters (syllables)/s.
 */
public final class SpeechMeter {

    public static final double ENGLISH_WORDS_PER_S = 2.5;
    public static final double MANDARIN_CHARS_PER_S = 5.2;

    private int words;
    private int wordChars;
    private int cjkChars;
    private boolean inWord;

    public void add(CharSequence text) {
        String s = text.toString();
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            if (isCjk(cp)) {
                cjkChars++;
                inWord = false;
            } else if (Character.isLetterOrDigit(cp)) {
                if (!inWord) {
                    words++;
                    inWord = true;
                }
                wordChars++;
            } else if (inWord && (cp == '\'' || cp == '\u2019')) {
                // "don't" stays one word.
            } else {
                inWord = false;
            }
        }
    }

    public int words() {
        return words;
    }

    public int cjkChars() {
        return cjkChars;
    }

    /** True when CJK characters outnumber the characters of words. */
    public boolean cjkDominant() {
        return cjkChars > wordChars;
    }

    /** Speech units per second in the dominant script: words/s, or CJK characters/s. */
    public double unitsPerSecond(double seconds) {
        if (seconds <= 0) {
            return 0;
        }
        return (cjkDominant() ? cjkChars : words) / seconds;
    }

    /** How many times faster than a person speaking the same text; 0 before any time has passed. */
    public double ratio(double seconds) {
        double human = cjkDominant() ? MANDARIN_CHARS_PER_S : ENGLISH_WORDS_PER_S;
        return unitsPerSecond(seconds) / human;
    }

    public String unitName() {
        return cjkDominant() ? "chars" : "words";
    }

    /** Han ideographs, kana and Hangul syllables: each is about one spoken syllable. */
    static boolean isCjk(int cp) {
        return (cp >= 0x4E00 && cp <= 0x9FFF)      // CJK Unified Ideographs
                || (cp >= 0x3400 && cp <= 0x4DBF)  // Extension A
                || (cp >= 0x20000 && cp <= 0x2FA1F) // Extensions B.. and compatibility supplement
                || (cp >= 0xF900 && cp <= 0xFAFF)  // Compatibility Ideographs
                || (cp >= 0x3040 && cp <= 0x30FF)  // Hiragana, Katakana
                || (cp >= 0xAC00 && cp <= 0xD7AF); // Hangul syllables
    }
}
