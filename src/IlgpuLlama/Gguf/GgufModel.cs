using System.Collections.ObjectModel;
using System.Text.RegularExpressions;

namespace IlgpuLlama.Gguf;

/// <summary>
/// A GGUF model: one file, or every file of a split set (<c>name-00001-of-00003.gguf</c>, as
/// llama.cpp's gguf-split writes them) opened from its first file, presented as one name → tensor map
/// whose reads go to the file that holds each tensor. The metadata is the first file's.
/// </summary>
public sealed partial class GgufModel : IDisposable
{
    readonly Dictionary<string, GgufFile> byPath;

    GgufModel(string path, List<GgufFile> files, IReadOnlyDictionary<string, GgufTensor> tensors)
    {
        FilePath = path;
        Files = files.AsReadOnly();
        Tensors = tensors;
        byPath = files.ToDictionary(f => f.FilePath, StringComparer.Ordinal);
    }

    /// <summary>The file the model was opened from (the first of a split set).</summary>
    public string FilePath { get; }

    /// <summary>The opened files in split order.</summary>
    public IReadOnlyList<GgufFile> Files { get; }

    /// <summary>The first file: its metadata describes the model.</summary>
    public GgufFile Head => Files[0];

    /// <summary>Every tensor of every file by name.</summary>
    public IReadOnlyDictionary<string, GgufTensor> Tensors { get; }

    [GeneratedRegex(@"^(?<prefix>.+)-(?<no>\d{5})-of-(?<count>\d{5})\.gguf$", RegexOptions.IgnoreCase)]
    private static partial Regex SplitName();

    /// <summary>True for a file name that is a part of a split set other than the first (name-00002-of-00003.gguf).</summary>
    internal static bool IsLaterSplitPart(string fileName) =>
        SplitName().Match(fileName) is { Success: true } m && int.Parse(m.Groups["no"].Value) != 1;

    /// <summary>True when <paramref name="path"/> names a .gguf file (by its extension).</summary>
    public static bool IsGgufPath(string path) => path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase);

    /// <summary>Opens a GGUF model file, or the first file of a split set with all its parts.</summary>
    /// <exception cref="GgufException">A file is missing, invalid, or the split set is inconsistent.</exception>
    public static GgufModel Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var match = SplitName().Match(Path.GetFileName(path));
        if (!match.Success)
        {
            var file = GgufFile.Open(path);
            try
            {
                if (file.GetInteger(SplitCountKey) is long n && n > 1)
                    throw new GgufException($"{path}: the file is part of a split set of {n} files (metadata '{SplitCountKey}') but its name does not say which; rename the parts name-00001-of-{n:D5}.gguf ... as gguf-split writes them");
                return new GgufModel(path, [file], file.Tensors);
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }
        int no = int.Parse(match.Groups["no"].Value), count = int.Parse(match.Groups["count"].Value);
        string directory = Path.GetDirectoryName(path) ?? ".";
        string Part(int i) => Path.Combine(directory, $"{match.Groups["prefix"].Value}-{i:D5}-of-{count:D5}.gguf");
        if (count < 1 || no < 1 || no > count)
            throw new GgufException($"{path}: the name says part {no} of {count}, which is not a valid split; give the first part, name-00001-of-NNNNN.gguf");
        if (no != 1)
            throw new GgufException($"{path}: this is part {no} of {count} of a split model; give the first part, {Path.GetFileName(Part(1))}");
        var files = new List<GgufFile>(count);
        try
        {
            for (int i = 1; i <= count; i++)
            {
                string part = Part(i);
                if (!File.Exists(part))
                    throw new GgufException($"{part}: part {i} of {count} of the split model {Path.GetFileName(path)} is missing; download every part into {directory}");
                var file = GgufFile.Open(part);
                files.Add(file);
                long? fileNo = file.GetInteger(SplitNoKey), fileCount = file.GetInteger(SplitCountKey);
                // gguf-split numbers parts from 0 in the metadata and from 1 in the names.
                if (count > 1 && (fileNo != i - 1 || fileCount != count))
                    throw new GgufException($"{part}: its metadata says part {(fileNo is long a ? (a + 1).ToString() : "?")} of {(fileCount is long c ? c.ToString() : "?")}, its name part {i} of {count}; the parts belong to different downloads — download them again");
            }
            var all = new OrderedDictionary<string, GgufTensor>(StringComparer.Ordinal);
            foreach (var file in files)
            {
                foreach (var (name, tensor) in file.Tensors)
                {
                    if (!all.TryAdd(name, tensor))
                        throw new GgufException($"{file.FilePath}: tensor '{name}' is also in {Path.GetFileName(all[name].FilePath)}; the parts belong to different downloads — download them again");
                }
            }
            return new GgufModel(path, files, new ReadOnlyDictionary<string, GgufTensor>(all));
        }
        catch
        {
            foreach (var f in files)
                f.Dispose();
            throw;
        }
    }

    /// <summary>gguf-split's key for a part's index (from 0).</summary>
    public const string SplitNoKey = "split.no";

    /// <summary>gguf-split's key for the number of parts.</summary>
    public const string SplitCountKey = "split.count";

    /// <summary>A read-only view of bytes of a tensor's data (see <see cref="GgufFile.GetSpan"/>).</summary>
    public ReadOnlySpan<byte> GetSpan(GgufTensor tensor, long offset, int count) =>
        byPath.TryGetValue(tensor.FilePath, out var file)
            ? file.GetSpan(tensor, offset, count)
            : throw new ArgumentException($"tensor '{tensor.Name}' from '{tensor.FilePath}' is not part of {FilePath}", nameof(tensor));

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var f in Files)
            f.Dispose();
    }
}
