// Compile-only stub for build_apk.sh: never packaged, never run. The real class comes from
// com.microsoft.onnxruntime:onnxruntime-genai-android (see app/build.gradle).
package ai.onnxruntime.genai;

public final class Generator implements AutoCloseable {
    public Generator(Model model, GeneratorParams generatorParams) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    public void appendTokenSequences(Sequences sequences) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    public boolean isDone() {
        throw new UnsupportedOperationException("stub");
    }

    public void generateNextToken() throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    public int getLastTokenInSequence(long sequenceIndex) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void close() {
    }
}
