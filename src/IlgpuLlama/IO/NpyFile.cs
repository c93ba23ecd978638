using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace IlgpuLlama.IO;

/// <summary>
/// Minimal NumPy .npy (formats 1.0-3.0) for little-endian float32 C-order arrays: what `logits`
/// writes and what the golden fixtures hold. Anything else is refused with one line naming the file,
/// what it holds and how to convert it.
/// </summary>
public static partial class NpyFile
{
    static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>How to write a file this reader takes, appended to the messages that refuse one.</summary>
    const string Fix = "save it with numpy.save(path, np.ascontiguousarray(a, dtype='<f4'))";

    /// <summary>Writes a float32 array through <see cref="OutputFile"/> (temporary file beside the target, then rename); returns the path written.</summary>
    public static string Write(string path, ReadOnlySpan<float> data, IReadOnlyList<long> shape)
    {
        long count = shape.Aggregate(1L, (a, d) => a * d);
        if (count != data.Length)
            throw new ArgumentException($"npy: shape [{string.Join(", ", shape)}] has {count} elements but {data.Length} were given");
        string dims = shape.Count == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        int unpadded = Magic.Length + 2 + 2 + dict.Length + 1;
        string header = dict + new string(' ', (64 - unpadded % 64) % 64) + "\n";
        byte[] payload = MemoryMarshal.AsBytes(data).ToArray();
        return OutputFile.Write(path, f =>
        {
            f.Write(Magic);
            f.Write([1, 0]);
            Span<byte> len = stackalloc byte[2];
            BitConverter.TryWriteBytes(len, (ushort)header.Length);
            f.Write(len);
            f.Write(Encoding.ASCII.GetBytes(header));
            f.Write(payload);
        });
    }

    /// <summary>Reads a little-endian float32 C-order array.</summary>
    /// <exception cref="InvalidDataException">The file is not such an array (the message names the file and the fix).</exception>
    /// <exception cref="FileNotFoundException">The file does not exist or is a directory.</exception>
    public static (float[] Data, long[] Shape) Read(string path)
    {
        if (Directory.Exists(path))
            throw new FileNotFoundException($"{path} is a directory, not a .npy file");
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path} does not exist");
        byte[] bytes;
        try
        {
            bytes = InputFile.ReadAllBytes(path);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new IOException($"{path}: cannot read it ({e.Message.TrimEnd('.')}); check its permissions", e);
        }
        if (bytes.Length == 0)
            throw new InvalidDataException($"{path} is empty, not a .npy file; {Fix}");
        if (bytes.Length < 10 || !bytes.AsSpan(0, 6).SequenceEqual(Magic))
            throw new InvalidDataException($"{path} is not a .npy file (it does not start with \\x93NUMPY); {Fix}");
        int major = bytes[6];
        if (major is < 1 or > 3)
            throw new InvalidDataException($"{path}: .npy format version {major}.{bytes[7]} is not one of 1.0, 2.0, 3.0; {Fix}");
        int headerStart = major == 1 ? 10 : 12;
        if (bytes.Length < headerStart)
            throw new InvalidDataException($"{path} is truncated inside its header ({bytes.Length} bytes); {Fix}");
        long headerLen = major == 1 ? BitConverter.ToUInt16(bytes, 8) : BitConverter.ToUInt32(bytes, 8);
        if (headerStart + headerLen > bytes.Length)
            throw new InvalidDataException($"{path} is truncated: its header says {headerLen} bytes but only {bytes.Length - headerStart} follow; {Fix}");
        string header;
        try
        {
            var encoding = major == 3 ? new UTF8Encoding(false, true) : (Encoding)Encoding.GetEncoding("latin1");
            header = encoding.GetString(bytes, headerStart, (int)headerLen).Trim();
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidDataException($"{path}: the header is not valid UTF-8; {Fix}");
        }
        string shown = header.Length <= 200 ? header : header[..200] + "...";

        var descr = DescrPattern().Match(header);
        if (!descr.Success)
            throw new InvalidDataException($"{path}: no 'descr' in the header {shown}; {Fix}");
        string dtype = descr.Groups[1].Value;
        if (dtype != "<f4")
            throw new InvalidDataException($"{path} holds {Describe(dtype)} ('{dtype}'), but only little-endian float32 ('<f4') is read; convert it with a.astype('<f4') and {Fix}");
        var fortran = FortranPattern().Match(header);
        if (!fortran.Success)
            throw new InvalidDataException($"{path}: no 'fortran_order' in the header {shown}; {Fix}");
        if (fortran.Groups[1].Value == "True")
            throw new InvalidDataException($"{path} is in Fortran (column-major) order; {Fix}");
        var m = ShapePattern().Match(header);
        if (!m.Success)
            throw new InvalidDataException($"{path}: no shape in the header {shown}; {Fix}");
        var dims = m.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var shape = new long[dims.Length];
        long count = 1;
        for (int i = 0; i < dims.Length; i++)
        {
            if (!long.TryParse(dims[i], NumberStyles.None, CultureInfo.InvariantCulture, out shape[i]))
                throw new InvalidDataException($"{path}: shape ({m.Groups[1].Value}) is not a tuple of sizes; {Fix}");
            count = shape[i] == 0 ? 0 : count > long.MaxValue / 4 / Math.Max(1, shape[i]) ? -1 : count * shape[i];
            if (count < 0)
                throw new InvalidDataException($"{path}: shape ({m.Groups[1].Value}) is too large to read");
        }
        long dataStart = headerStart + headerLen;
        long dataBytes = bytes.Length - dataStart;
        if (dataBytes < count * 4)
            throw new InvalidDataException($"{path} is truncated: {dataBytes} data bytes, but shape [{string.Join(", ", shape)}] needs {count * 4}; write the file again");
        if (dataBytes > count * 4)
            throw new InvalidDataException($"{path} has {dataBytes - count * 4} bytes after the data of shape [{string.Join(", ", shape)}]; it is corrupt, write it again");
        var data = MemoryMarshal.Cast<byte, float>(bytes.AsSpan((int)dataStart)).ToArray();
        return (data, shape);
    }

    static string Describe(string dtype)
    {
        string order = dtype.Length > 0 && dtype[0] == '>' ? "big-endian " : "";
        string kind = dtype.TrimStart('<', '>', '|', '=') switch
        {
            "f8" => "float64",
            "f2" => "float16",
            "f4" => "float32",
            "i8" => "int64",
            "i4" => "int32",
            "u1" or "b1" => "bytes or booleans",
            var k when k.StartsWith('O') => "Python objects",
            _ => "another type",
        };
        return order + kind;
    }

    [GeneratedRegex(@"'descr':\s*'([^']*)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'fortran_order':\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"'shape':\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
