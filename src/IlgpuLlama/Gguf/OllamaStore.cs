using System.Text.Json;
using System.Text.RegularExpressions;

namespace IlgpuLlama.Gguf;

/// <summary>
/// Finds the GGUF file of a model pulled with Ollama, as Ollama itself resolves it: the manifest
/// <c>manifests/HOST/NAMESPACE/MODEL/TAG</c> under <c>$OLLAMA_MODELS</c> (default <c>~/.ollama/models</c>)
/// lists the model's layers, and the layer of media type <c>application/vnd.ollama.image.model</c> is the
/// GGUF blob <c>blobs/sha256-DIGEST</c>. Names default like Ollama's: host registry.ollama.ai, namespace
/// library, tag latest.
/// </summary>
public static partial class OllamaStore
{
    /// <summary>The environment variable naming Ollama's model store.</summary>
    public const string StoreVariable = "OLLAMA_MODELS";

    /// <summary>The media type of the layer that holds the GGUF weights.</summary>
    public const string ModelMediaType = "application/vnd.ollama.image.model";

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex Part();

    /// <summary>The store directory: $OLLAMA_MODELS, or ~/.ollama/models.</summary>
    public static string StoreDirectory =>
        Environment.GetEnvironmentVariable(StoreVariable) is { Length: > 0 } dir ? dir
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".ollama", "models");

    /// <summary>The manifest path of NAME[:TAG] (host/namespace/model parts as Ollama fills them in).</summary>
    public static string ManifestPath(string store, string reference)
    {
        string spec = reference.Trim();
        string where = $"ollama:{reference}";
        int colon = spec.LastIndexOf(':');
        int slash = spec.LastIndexOf('/');
        string name = colon > slash ? spec[..colon] : spec, tag = colon > slash ? spec[(colon + 1)..] : "latest";
        var parts = name.Split('/').ToList();
        if (parts.Count > 3 || parts.Any(p => !Part().IsMatch(p)) || !Part().IsMatch(tag))
            throw new GgufException($"{where}: not an Ollama model name; write ollama:NAME[:TAG], e.g. ollama:llama3.2:1b");
        if (parts.Count == 1) parts.Insert(0, "library");
        if (parts.Count == 2) parts.Insert(0, "registry.ollama.ai");
        return Path.Combine([store, "manifests", .. parts, tag]);
    }

    /// <summary>The GGUF blob of an Ollama model reference (NAME[:TAG], without the "ollama:" prefix).</summary>
    /// <exception cref="GgufException">The name is malformed, not pulled, or its manifest names no model blob.</exception>
    public static string Resolve(string reference)
    {
        string where = $"ollama:{reference}";
        string store = StoreDirectory;
        string manifest = ManifestPath(store, reference);
        if (!File.Exists(manifest))
            throw new GgufException($"{where}: no such model in the Ollama store {store} (no {manifest}); run 'ollama pull {reference}', or set {StoreVariable} to the store that has it");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(IO.InputFile.ReadAllBytes(manifest));
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new GgufException($"{where}: cannot read the manifest {manifest} ({e.Message.ReplaceLineEndings(" ")}); run 'ollama pull {reference}' again", e);
        }
        using (doc)
        {
            string? digest = null;
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("layers", out var layers) && layers.ValueKind == JsonValueKind.Array)
            {
                foreach (var layer in layers.EnumerateArray())
                {
                    if (layer.ValueKind == JsonValueKind.Object && layer.TryGetProperty("mediaType", out var type) && type.ValueKind == JsonValueKind.String
                        && type.GetString() == ModelMediaType && layer.TryGetProperty("digest", out var d) && d.ValueKind == JsonValueKind.String)
                    {
                        digest = d.GetString();
                        break;
                    }
                }
            }
            if (digest is null || !Regex.IsMatch(digest, "^sha256:[0-9a-f]{64}$"))
                throw new GgufException($"{where}: the manifest {manifest} names no model layer ({ModelMediaType}) with a sha256 digest; run 'ollama pull {reference}' again");
            string blob = Path.Combine(store, "blobs", digest.Replace(':', '-'));
            if (!File.Exists(blob))
                throw new GgufException($"{where}: the model's blob {blob} is missing from the store; run 'ollama pull {reference}' again");
            return blob;
        }
    }
}
