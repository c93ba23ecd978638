using IlgpuLlama.Gguf;
using IlgpuLlama.Model;

namespace IlgpuLlama.Engine;

/// <summary>What a model argument names: a GGUF model (see <see cref="GgufLocation"/>) or a Hugging Face directory.</summary>
public static class ModelLocation
{
    /// <summary>
    /// The configuration of a model: a GGUF model's metadata when <paramref name="model"/> is one (a
    /// .gguf file, a directory holding one, ollama:NAME), else the directory's config.json (<see cref="LlamaConfig.FromDirectory"/>).
    /// </summary>
    public static LlamaConfig Config(string model)
    {
        if (GgufLocation.Find(model) is not string gguf)
            return LlamaConfig.FromDirectory(model);
        using var source = GgufModel.Open(gguf);
        return GgufLlama.ReadConfig(source);
    }
}
