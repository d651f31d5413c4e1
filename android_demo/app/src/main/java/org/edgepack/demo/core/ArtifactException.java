package org.edgepack.demo.core;

/** Why an artifact folder cannot be loaded; the message is shown on screen as is. */
public final class ArtifactException extends Exception {

    /** What went wrong, so the screen can say what to do about it. */
    public enum Kind {
        /** No folder with an edgepack.json was found. */
        NOT_FOUND,
        /** edgepack.json is not a manifest this app can read. */
        INVALID_MANIFEST,
        /** The manifest's schema is newer than this app. */
        UNSUPPORTED,
        /** A file listed in the manifest is not there. */
        MISSING,
        /** A file is shorter than the manifest says: the push did not finish. */
        PARTIAL,
        /** A file has the wrong size or the wrong sha256. */
        CORRUPT,
        /** A picture the app cannot use (too many pixels, too small, not a picture). */
        BAD_IMAGE
    }

    public final Kind kind;

    public ArtifactException(Kind kind, String message) {
        super(message);
        this.kind = kind;
    }
}
