// Compile-only stub for build_apk.sh: never packaged, never run. The real class comes from
// com.microsoft.onnxruntime:onnxruntime-genai-android (see app/build.gradle).
package ai.onnxruntime.genai;

public final class GeneratorParams implements AutoCloseable {
    public GeneratorParams(Model model) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    public void setSearchOption(String optionName, double value) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void close() {
    }
}
