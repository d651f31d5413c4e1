// Compile-only stub for build_apk.sh: never packaged, never run. The real class comes from
// com.microsoft.onnxruntime:onnxruntime-genai-android (see app/build.gradle).
package ai.onnxruntime.genai;

public class Model implements AutoCloseable {
    public Model(String modelPath) throws GenAIException {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void close() {
    }
}
