using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>Deterministic random host data (never zeros), generated in parallel chunks.</summary>
public static class HostData
{
    const int Chunk = 1 << 20;

    static void Fill<T>(T[] a, int seed, Func<Random, T> next)
    {
        int chunks = (int)((a.LongLength + Chunk - 1) / Chunk);
        Parallel.For(0, chunks, c =>
        {
            var rng = new Random(seed * 7919 + c);
            long end = Math.Min(a.LongLength, (long)(c + 1) * Chunk);
            for (long i = (long)c * Chunk; i < end; i++)
                a[i] = next(rng);
        });
    }

    /// <summary>Uniform fp32 in [-scale, scale].</summary>
    public static float[] Floats(int seed, long n, double scale = 1.0)
    {
        var a = new float[n];
        Fill(a, seed, r => (float)((r.NextDouble() * 2 - 1) * scale));
        return a;
    }

    /// <summary>Uniform 16-bit weights in [-scale, scale] (round to nearest even).</summary>
    public static ushort[] Weights(int seed, long n, SixteenBitFormat format, double scale = 0.05)
    {
        var a = new ushort[n];
        Fill(a, seed, r => format.Encode((r.NextDouble() * 2 - 1) * scale));
        return a;
    }

    /// <summary>
    /// A random [rows, cols] weight matrix in <paramref name="format"/>: the 16-bit values of
    /// <see cref="Weights"/>, or uniform fp32 values in [-scale, scale] quantised row by row (in parallel).
    /// </summary>
    public static HostMatrix Matrix(int seed, int rows, int cols, WeightFormat format, double scale = 0.05)
    {
        if (format is SixteenBitFormat f)
            return HostMatrix.Of(f, Weights(seed, (long)rows * cols, f, scale), rows, cols);
        var q = (BlockQuantFormat)format;
        var values = Floats(seed, (long)rows * cols, scale);
        int rowBytes = (int)q.RowQuantBytes(cols), words = (int)q.RowSideWords(cols);
        var quants = new byte[(long)rows * rowBytes];
        var scales = new ushort[(long)rows * words];
        Parallel.For(0, rows, r => q.QuantizeRow(values.AsSpan((int)((long)r * cols), cols), quants.AsSpan(r * rowBytes, rowBytes), scales.AsSpan(r * words, words)));
        return HostMatrix.Of(q, quants, scales, rows, cols);
    }

    /// <summary>Uniform fp16 bits in [-scale, scale] (KV cache contents).</summary>
    public static ushort[] HalfBits(int seed, long n, double scale = 1.0)
    {
        var a = new ushort[n];
        Fill(a, seed, r => WeightFormat.Fp16.Encode((r.NextDouble() * 2 - 1) * scale));
        return a;
    }

    /// <summary>Uniform integers in [0, max).</summary>
    public static int[] Ints(int seed, long n, int max)
    {
        var a = new int[n];
        Fill(a, seed, r => r.Next(max));
        return a;
    }

    /// <summary>
    /// Row indices to validate: all rows when <paramref name="all"/>, else up to <paramref name="count"/>
    /// rows: the first and last quarter of them at the ends, the rest drawn at random in between.
    /// </summary>
    public static int[] SampleRows(int rows, int count, bool all, int seed)
    {
        if (all || rows <= count)
            return Enumerable.Range(0, rows).ToArray();
        int edge = count / 4;
        var set = new SortedSet<int>();
        for (int i = 0; i < edge; i++)
        {
            set.Add(i);
            set.Add(rows - 1 - i);
        }
        var rng = new Random(seed);
        while (set.Count < count)
            set.Add(rng.Next(edge, rows - edge));
        return set.ToArray();
    }

    /// <summary>The rows <paramref name="rowIds"/> of a row-major [*, width] array, packed.</summary>
    public static T[] Rows<T>(T[] source, int[] rowIds, int width)
    {
        var r = new T[(long)rowIds.Length * width];
        for (int i = 0; i < rowIds.Length; i++)
            Array.Copy(source, (long)rowIds[i] * width, r, (long)i * width, width);
        return r;
    }

    /// <summary>fp32 values widened to float64 (references compare in float64).</summary>
    public static double[] ToDouble(float[] a) => Array.ConvertAll(a, v => (double)v);

    /// <summary>fp16 bits (KV-cache contents) as fp32.</summary>
    public static float[] HalfToFloat(ushort[] bits) => Array.ConvertAll(bits, b => (float)WeightFormat.Fp16.Decode(b));

    /// <summary>fp16 bits as float64.</summary>
    public static double[] HalfToDouble(ushort[] bits) => Array.ConvertAll(bits, WeightFormat.Fp16.Decode);

    /// <summary>Ints as floats, for exact comparisons of ids.</summary>
    public static float[] IntsAsFloats(int[] a) => Array.ConvertAll(a, v => (float)v);

    /// <summary>"all 96 rows" or "8 of 128256 rows (sampled)".</summary>
    public static string RowsMethod(int checkedRows, int rows, string what = "rows") =>
        checkedRows == rows ? $"all {rows} {what}" : $"{checkedRows} of {rows} {what} (sampled)";

    /// <summary>Multiply-adds below which a reference checks every output row.</summary>
    public const long FullCheckWork = 16L * 1024 * 1024;

    /// <summary>Rows checked when sampling.</summary>
    public const int SampledRows = 256;
}
