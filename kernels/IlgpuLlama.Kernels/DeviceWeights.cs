namespace IlgpuLlama.Kernels;

/// <summary>
/// A weight matrix [rows, cols] (row-major, [out, in]) on the device as the launchers take it: its
/// format says how the values are laid out and which kernel specialisation reads them.
/// </summary>
/// <param name="Format">layout of the values</param>
/// <param name="Rows">output rows</param>
/// <param name="Cols">input values per row</param>
/// <param name="Values">the 16-bit values [rows, cols] of a <see cref="SixteenBitFormat"/></param>
public readonly record struct WeightMatrix(WeightFormat Format, int Rows, int Cols, ArrayView<ushort> Values)
{
    /// <summary>A matrix of 16-bit values.</summary>
    public static WeightMatrix Of(SixteenBitFormat format, ArrayView<ushort> values, int rows, int cols) => new(format, rows, cols, values);

    /// <summary>Rows <paramref name="first"/>..<paramref name="first"/>+<paramref name="count"/>-1 as a matrix.</summary>
    public WeightMatrix RowRange(int first, int count) => this with { Rows = count, Values = Values.SubView((long)first * Cols, (long)count * Cols) };

    /// <summary>The values as 128-bit chunks of eight weights (checked by the launcher first: cols must be a multiple of 8).</summary>
    public ArrayView<U4> Chunks => Values.Cast<U4>();
}

/// <summary>A 1-D weight (a norm's scale) on the device.</summary>
/// <param name="Format">16-bit format of the values</param>
/// <param name="Values">the values</param>
public readonly record struct WeightVector(SixteenBitFormat Format, ArrayView<ushort> Values);
