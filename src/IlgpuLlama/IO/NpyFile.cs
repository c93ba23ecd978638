using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace IlgpuLlama.IO;

/// <summary>
/// Minimal NumPy .npy (format 1.0) for little-endian float32 C-order arrays: what `logits`
/// writes and what the golden fixtures hold.
/// </summary>
public static partial class NpyFile
{
    static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Writes a float32 array atomically (temp file + rename).</summary>
    public static void Write(string path, ReadOnlySpan<float> data, IReadOnlyList<long> shape)
    {
        long count = shape.Aggregate(1L, (a, d) => a * d);
        if (count != data.Length)
            throw new ArgumentException($"npy: shape [{string.Join(", ", shape)}] has {count} elements but {data.Length} were given");
        string dims = shape.Count == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        int unpadded = Magic.Length + 2 + 2 + dict.Length + 1;
        string header = dict + new string(' ', (64 - unpadded % 64) % 64) + "\n";
        string tmp = path + ".tmp-" + Environment.ProcessId;
        try
        {
            using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
            {
                f.Write(Magic);
                f.Write([1, 0]);
                Span<byte> len = stackalloc byte[2];
                BitConverter.TryWriteBytes(len, (ushort)header.Length);
                f.Write(len);
                f.Write(Encoding.ASCII.GetBytes(header));
                f.Write(MemoryMarshal.AsBytes(data));
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>Reads a little-endian float32 C-order array.</summary>
    public static (float[] Data, long[] Shape) Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || !bytes.AsSpan(0, 6).SequenceEqual(Magic))
            throw new InvalidDataException($"{path}: not a .npy file (bad magic)");
        int major = bytes[6];
        int headerLen = major == 1 ? BitConverter.ToUInt16(bytes, 8) : BitConverter.ToInt32(bytes, 8);
        int headerStart = major == 1 ? 10 : 12;
        string header = Encoding.ASCII.GetString(bytes, headerStart, headerLen);
        if (!header.Contains("'descr': '<f4'", StringComparison.Ordinal) || header.Contains("'fortran_order': True", StringComparison.Ordinal))
            throw new InvalidDataException($"{path}: only little-endian float32 C-order arrays are supported (header {header.Trim()})");
        var m = ShapePattern().Match(header);
        if (!m.Success)
            throw new InvalidDataException($"{path}: no shape in header {header.Trim()}");
        var shape = m.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        long count = shape.Aggregate(1L, (a, d) => a * d);
        int dataStart = headerStart + headerLen;
        if (bytes.Length - dataStart != count * 4)
            throw new InvalidDataException($"{path}: {bytes.Length - dataStart} data bytes for shape [{string.Join(", ", shape)}]");
        var data = MemoryMarshal.Cast<byte, float>(bytes.AsSpan(dataStart)).ToArray();
        return (data, shape);
    }

    [GeneratedRegex(@"'shape':\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
