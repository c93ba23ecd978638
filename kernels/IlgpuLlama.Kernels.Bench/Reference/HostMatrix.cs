namespace IlgpuLlama.Kernels.Reference;

/// <summary>
/// A weight matrix [rows, cols] in host memory in one format's device layout: 16-bit values, or a
/// block format's quants and scales. The references read it through <see cref="Value"/>, the exact
/// value the device computes with (ggml's dequantisation for the block formats).
/// </summary>
public sealed class HostMatrix
{
    HostMatrix(WeightFormat format, int rows, int cols, ushort[]? values, byte[]? quants, ushort[]? scales)
    {
        Format = format;
        Rows = rows;
        Cols = cols;
        Values = values;
        Quants = quants;
        Scales = scales;
    }

    /// <summary>The layout.</summary>
    public WeightFormat Format { get; }

    /// <summary>Output rows.</summary>
    public int Rows { get; }

    /// <summary>Input values per row.</summary>
    public int Cols { get; }

    /// <summary>16-bit values [rows, cols] (16-bit formats).</summary>
    public ushort[]? Values { get; }

    /// <summary>Quants [rows, cols / block x quant bytes] (block formats).</summary>
    public byte[]? Quants { get; }

    /// <summary>Side words [rows, cols / block x side words] (block formats: the fp16 scales of Q8_0/Q4_0).</summary>
    public ushort[]? Scales { get; }

    /// <summary>A matrix of 16-bit values.</summary>
    public static HostMatrix Of(SixteenBitFormat format, ushort[] values, int rows, int cols) => new(format, rows, cols, values, null, null);

    /// <summary>A block-format matrix from its quants and scales.</summary>
    public static HostMatrix Of(BlockQuantFormat format, byte[] quants, ushort[] scales, int rows, int cols) => new(format, rows, cols, null, quants, scales);

    /// <summary>fp32 values [rows, cols] stored in <paramref name="format"/>: rounded to 16 bits, or quantised block by block.</summary>
    public static HostMatrix From(WeightFormat format, float[] values, int rows, int cols)
    {
        if (format is SixteenBitFormat f)
            return Of(f, Array.ConvertAll(values, v => f.Encode(v)), rows, cols);
        var q = (BlockQuantFormat)format;
        int rowBytes = (int)q.RowQuantBytes(cols), words = (int)q.RowSideWords(cols);
        var quants = new byte[(long)rows * rowBytes];
        var scales = new ushort[(long)rows * words];
        Parallel.For(0, rows, r => q.QuantizeRow(values.AsSpan(r * cols, cols), quants.AsSpan(r * rowBytes, rowBytes), scales.AsSpan(r * words, words)));
        return Of(q, quants, scales, rows, cols);
    }

    /// <summary>The value of weight (r, c) as the device computes with it (ggml's dequantisation for the block formats).</summary>
    public double Value(int r, int c)
    {
        if (Format is SixteenBitFormat f)
            return f.Decode(Values![(long)r * Cols + c]);
        var q = (BlockQuantFormat)Format;
        int b = c / q.BlockSize;
        Span<float> y = stackalloc float[q.BlockSize];
        q.DequantizeBlock(Quants.AsSpan((int)(r * q.RowQuantBytes(Cols)) + b * q.QuantBytesPerBlock, q.QuantBytesPerBlock),
            Scales.AsSpan((int)(r * q.RowSideWords(Cols)) + b * q.SideWords, q.SideWords), y);
        return y[c % q.BlockSize];
    }

    /// <summary>Every value, row-major, as the device computes with them.</summary>
    public double[] Dequantized()
    {
        var d = new double[(long)Rows * Cols];
        Parallel.For(0, Rows, r =>
        {
            if (Format is BlockQuantFormat q)
            {
                var row = new float[Cols];
                q.DequantizeRow(Quants.AsSpan((int)(r * q.RowQuantBytes(Cols)), (int)q.RowQuantBytes(Cols)), Scales.AsSpan((int)(r * q.RowSideWords(Cols)), (int)q.RowSideWords(Cols)), row);
                for (int c = 0; c < Cols; c++)
                    d[(long)r * Cols + c] = row[c];
                return;
            }
            for (int c = 0; c < Cols; c++)
                d[(long)r * Cols + c] = Value(r, c);
        });
        return d;
    }

    /// <summary>The rows <paramref name="ids"/>, in that order, as a matrix.</summary>
    public HostMatrix SelectRows(int[] ids)
    {
        if (Format is SixteenBitFormat f)
        {
            var v = new ushort[(long)ids.Length * Cols];
            for (int i = 0; i < ids.Length; i++)
                Array.Copy(Values!, (long)ids[i] * Cols, v, (long)i * Cols, Cols);
            return Of(f, v, ids.Length, Cols);
        }
        var q = (BlockQuantFormat)Format;
        int rowBytes = (int)q.RowQuantBytes(Cols), words = (int)q.RowSideWords(Cols);
        var quants = new byte[(long)ids.Length * rowBytes];
        var scales = new ushort[(long)ids.Length * words];
        for (int i = 0; i < ids.Length; i++)
        {
            Array.Copy(Quants!, (long)ids[i] * rowBytes, quants, (long)i * rowBytes, rowBytes);
            Array.Copy(Scales!, (long)ids[i] * words, scales, (long)i * words, words);
        }
        return Of(q, quants, scales, ids.Length, Cols);
    }
}
