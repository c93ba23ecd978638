namespace IlgpuLlama.Kernels;

/// <summary>
/// A weight matrix [rows, cols] (row-major, [out, in]) on the device as the launchers take it: its
/// format says how the values are laid out and which kernel specialisation reads them. A 16-bit
/// format has one plane of values; a block format has its quants and its block scales.
/// </summary>
/// <param name="Format">layout of the values</param>
/// <param name="Rows">output rows</param>
/// <param name="Cols">input values per row</param>
/// <param name="Values">the 16-bit values [rows, cols] of a <see cref="SixteenBitFormat"/></param>
/// <param name="Quants">the quants of a <see cref="BlockQuantFormat"/>, [rows, cols / block x quant bytes per block]</param>
/// <param name="Scales">the side words of a <see cref="BlockQuantFormat"/> (fp16 block scales for Q8_0/Q4_0), [rows, cols / block x side words]</param>
public readonly record struct WeightMatrix(WeightFormat Format, int Rows, int Cols, ArrayView<ushort> Values, ArrayView<byte> Quants, ArrayView<ushort> Scales)
{
    /// <summary>A matrix of 16-bit values.</summary>
    public static WeightMatrix Of(SixteenBitFormat format, ArrayView<ushort> values, int rows, int cols) => new(format, rows, cols, values, default, default);

    /// <summary>A matrix in a block format.</summary>
    public static WeightMatrix Quantized(BlockQuantFormat format, ArrayView<byte> quants, ArrayView<ushort> scales, int rows, int cols) =>
        new(format, rows, cols, default, quants, scales);

    /// <summary>The row data as 128-bit chunks (checked by the launcher first: the row must be a whole number of chunks).</summary>
    public ArrayView<U4> Chunks => Format is BlockQuantFormat ? Quants.Cast<U4>() : Values.Cast<U4>();

    /// <summary>
    /// Checks the shape and the planes' lengths for a launch: a clear message (naming
    /// <paramref name="what"/>) instead of an out-of-bounds access on the device.
    /// </summary>
    public void Check(string what)
    {
        if (Format is BlockQuantFormat q)
        {
            Require.That(Cols > 0 && Cols % q.BlockSize == 0, $"{what}: input length {Cols} must be a positive multiple of {q.BlockSize} ({q.Name} blocks)");
            Require.Length(Quants, Rows * q.RowQuantBytes(Cols), $"{what} weight");
            Require.Length(Scales, Rows * q.RowSideWords(Cols), $"{what} weight scales");
        }
        else
        {
            Require.MultipleOf8(Cols, what);
            Require.Length(Values, (long)Rows * Cols, $"{what} weight");
        }
    }
}

/// <summary>A 1-D weight (a norm's scale) on the device.</summary>
/// <param name="Format">16-bit format of the values</param>
/// <param name="Values">the values</param>
public readonly record struct WeightVector(SixteenBitFormat Format, ArrayView<ushort> Values);
