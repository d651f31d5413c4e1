// Compile-only stub for build_apk.sh: never packaged, never run. The real class comes from
// com.microsoft.onnxruntime:onnxruntime-genai-android (see app/build.gradle).
package ai.onnxruntime.genai;

public class Tokenizer implements AutoCloseable {
    public Tokenizer(Model model) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    public Sequences encode(String string) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    public TokenizerStream createStream() throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void close() {
    }
}
