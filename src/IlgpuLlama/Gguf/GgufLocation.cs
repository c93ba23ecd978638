namespace IlgpuLlama.Gguf;

/// <summary>
/// Where a <c>--model</c> value points when it is a GGUF model: a .gguf file (the first part of a
/// split set), a directory without config.json that holds exactly one GGUF model, or
/// <c>ollama:NAME[:TAG]</c> (<see cref="OllamaStore"/>). Anything else is a Hugging Face directory.
/// </summary>
public static class GgufLocation
{
    /// <summary>The prefix of an Ollama model reference.</summary>
    public const string OllamaPrefix = "ollama:";

    /// <summary>The GGUF file to open for <paramref name="model"/>, or null when it is not a GGUF model.</summary>
    /// <exception cref="GgufException">A directory with several GGUF models, or an Ollama name that does not resolve.</exception>
    public static string? Find(string model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.StartsWith(OllamaPrefix, StringComparison.OrdinalIgnoreCase))
            return OllamaStore.Resolve(model[OllamaPrefix.Length..]);
        if (GgufModel.IsGgufPath(model) && !Directory.Exists(model))
            return model;
        if (!Directory.Exists(model) || File.Exists(Path.Combine(model, "config.json")))
            return null;
        // A split set counts once, by its first part (GgufModel's own reading of the names).
        var models = Directory.EnumerateFiles(model, "*.gguf")
            .Where(p => !GgufModel.IsLaterSplitPart(Path.GetFileName(p)))
            .Order(StringComparer.Ordinal).ToList();
        return models.Count switch
        {
            0 => null,
            1 => models[0],
            _ => throw new GgufException($"{model} holds {models.Count} GGUF models ({string.Join(", ", models.Take(4).Select(Path.GetFileName))}{(models.Count > 4 ? ", ..." : "")}); give the one to run as {EngineParameters.Model} {models[0]}"),
        };
    }

    /// <summary>True when <paramref name="model"/> names a GGUF model (see <see cref="Find"/>).</summary>
    public static bool IsGguf(string model) => Find(model) is not null;
}
