using System.Collections.ObjectModel;
using System.Text.Json;

namespace IlgpuLlama.Safetensors;

/// <summary>
/// The weights of a Hugging Face model directory: either one model.safetensors or the shards named
/// by model.safetensors.index.json, presented as a single name → tensor map whose reads are routed
/// to the shard that holds each tensor.
/// </summary>
/// <remarks>
/// When the index exists it wins over a model.safetensors next to it, as the index is what a sharded
/// download writes. Tensors present in a shard but missing from the index are still exposed, since
/// loaders read whole shards; a tensor in two shards, or an index entry its shard lacks, is an error.
/// </remarks>
public sealed unsafe class SafetensorsModel : IDisposable
{
    /// <summary>File name of an unsharded checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>File name of the shard index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly Dictionary<string, SafetensorsFile> _byPath;

    private SafetensorsModel(string directory, List<SafetensorsFile> files, IReadOnlyDictionary<string, TensorInfo> tensors, bool sharded)
    {
        Directory = directory;
        Files = files.AsReadOnly();
        Tensors = tensors;
        IsSharded = sharded;
        _byPath = files.ToDictionary(f => f.FilePath, StringComparer.Ordinal);
    }

    /// <summary>The model directory as given to <see cref="Open"/>.</summary>
    public string Directory { get; }

    /// <summary>The opened files, in shard order.</summary>
    public IReadOnlyList<SafetensorsFile> Files { get; }

    /// <summary>Every tensor of every file by name, in shard order then file order.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>True when the weights came through model.safetensors.index.json.</summary>
    public bool IsSharded { get; }

    /// <summary>Opens and validates the weights in a model directory.</summary>
    /// <exception cref="SafetensorsException">No weights, a malformed index, or any invalid shard.</exception>
    public static SafetensorsModel Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!System.IO.Directory.Exists(directory))
            throw new SafetensorsException($"{directory}: model directory does not exist");

        string indexPath = Path.Combine(directory, IndexFileName);
        string singlePath = Path.Combine(directory, SingleFileName);
        foreach (string p in new[] { indexPath, singlePath })
            if (System.IO.Directory.Exists(p))
                throw new SafetensorsException($"{p} is a directory, not a file; put the model's {Path.GetFileName(p)} file there");
        if (File.Exists(indexPath)) return OpenSharded(directory, indexPath);
        if (File.Exists(singlePath))
        {
            var file = SafetensorsFile.Open(singlePath);
            return new SafetensorsModel(directory, [file], file.Tensors, sharded: false);
        }
        throw new SafetensorsException(
            $"no {SingleFileName} or {IndexFileName} in {directory}; download a Llama 3 model into it (weights/README.md gives the hf download command)");
    }

    /// <summary>Looks a tensor up by name, with an error that names the directory when it is absent.</summary>
    public TensorInfo GetTensor(string name) =>
        Tensors.TryGetValue(name, out var t) ? t : throw new SafetensorsException($"{Directory}: no tensor named '{name}' in the model weights");

    /// <inheritdoc cref="SafetensorsFile.GetSpan(TensorInfo, long, int)"/>
    public ReadOnlySpan<byte> GetSpan(TensorInfo tensor, long byteOffset, int byteCount) => FileOf(tensor).GetSpan(tensor, byteOffset, byteCount);

    /// <inheritdoc cref="SafetensorsFile.GetSpan(TensorInfo)"/>
    public ReadOnlySpan<byte> GetSpan(TensorInfo tensor) => FileOf(tensor).GetSpan(tensor);

    /// <inheritdoc cref="SafetensorsFile.GetPointer(TensorInfo)"/>
    public byte* GetPointer(TensorInfo tensor) => FileOf(tensor).GetPointer(tensor);

    /// <summary>Unmaps every file.</summary>
    public void Dispose()
    {
        foreach (var f in Files) f.Dispose();
    }

    private SafetensorsFile FileOf(TensorInfo tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return _byPath.TryGetValue(tensor.FilePath, out var f)
            ? f
            : throw new ArgumentException($"tensor '{tensor.Name}' from '{tensor.FilePath}' is not part of the model in '{Directory}'", nameof(tensor));
    }

    private static SafetensorsModel OpenSharded(string directory, string indexPath)
    {
        const string Redownload = "the download is incomplete or mixed — re-download the model";
        var weightMap = ReadWeightMap(indexPath);

        var shardNames = weightMap.Values.Distinct(StringComparer.Ordinal).ToList();
        var files = new List<SafetensorsFile>(shardNames.Count);
        try
        {
            foreach (var shard in shardNames)
            {
                string shardPath = Path.Combine(directory, shard);
                if (!File.Exists(shardPath))
                {
                    string example = weightMap.First(kv => kv.Value == shard).Key;
                    throw new SafetensorsException(
                        $"{indexPath}: shard '{shard}' (holding tensor '{example}') is missing from {directory}; {Redownload}");
                }
                files.Add(SafetensorsFile.Open(shardPath));
            }

            var all = new OrderedDictionary<string, TensorInfo>(StringComparer.Ordinal);
            foreach (var file in files)
            {
                foreach (var (name, info) in file.Tensors)
                {
                    if (all.TryGetValue(name, out var other))
                    {
                        throw new SafetensorsException(
                            $"{indexPath}: tensor '{name}' appears in both '{Path.GetFileName(other.FilePath)}' and '{Path.GetFileName(file.FilePath)}'; {Redownload}");
                    }
                    all.Add(name, info);
                }
            }

            foreach (var (name, shard) in weightMap)
            {
                if (!all.TryGetValue(name, out var info) || info.FilePath != Path.Combine(directory, shard))
                {
                    throw new SafetensorsException(
                        $"{indexPath}: the index puts tensor '{name}' in '{shard}', but that shard does not contain it; {Redownload}");
                }
            }

            return new SafetensorsModel(directory, files, new ReadOnlyDictionary<string, TensorInfo>(all), sharded: true);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static OrderedDictionary<string, string> ReadWeightMap(string indexPath)
    {
        string Bad(string what) => $"{indexPath}: {what}; the index is corrupt — re-download the model";
        byte[] bytes;
        try
        {
            bytes = IO.InputFile.ReadAllBytes(indexPath);
        }
        catch (Exception e) when (e is (IOException and not IO.NotARegularFileException) or UnauthorizedAccessException)
        {
            throw new SafetensorsException($"{indexPath}: cannot read the index ({e.Message.ReplaceLineEndings(" ")})", e);
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new SafetensorsException(Bad($"not valid JSON ({e.Message.ReplaceLineEndings(" ")})"), e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafetensorsException(Bad($"the root is JSON {doc.RootElement.ValueKind}, not an object"));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map))
                throw new SafetensorsException(Bad("it has no \"weight_map\""));
            if (map.ValueKind != JsonValueKind.Object)
                throw new SafetensorsException(Bad($"\"weight_map\" is JSON {map.ValueKind}, not an object of tensor name → shard file"));

            var result = new OrderedDictionary<string, string>(StringComparer.Ordinal);
            foreach (var kv in map.EnumerateObject())
            {
                if (kv.Value.ValueKind != JsonValueKind.String)
                    throw new SafetensorsException(Bad($"tensor '{kv.Name}' maps to JSON {kv.Value.ValueKind}, not a shard file name"));
                string shard = kv.Value.GetString()!;
                // Shards are siblings of the index; refusing other paths keeps a hostile index from reading elsewhere.
                if (shard.Length == 0 || Path.IsPathRooted(shard) || shard.Split('/', '\\').Contains(".."))
                    throw new SafetensorsException(Bad($"tensor '{kv.Name}' maps to '{shard}', which is not a file name in the model directory"));
                if (!result.TryAdd(kv.Name, shard))
                    throw new SafetensorsException(Bad($"tensor '{kv.Name}' is listed twice in \"weight_map\""));
            }
            if (result.Count == 0)
                throw new SafetensorsException(Bad("\"weight_map\" lists no tensors"));
            return result;
        }
    }
}
