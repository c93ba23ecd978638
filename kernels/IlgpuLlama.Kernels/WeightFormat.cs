namespace IlgpuLlama.Kernels;

/// <summary>
/// How a weight is widened to fp32 inside a kernel. Kernels are generic over this struct so that
/// each format gets its own specialised code with no runtime branch; <see cref="WeightFormat.DeviceType"/>
/// names the struct of each format.
/// </summary>
public interface IWeightFormat
{
    /// <summary>The weight in the low 16 bits of a packed pair.</summary>
    float Low(uint pair);

    /// <summary>The weight in the high 16 bits of a packed pair.</summary>
    float High(uint pair);

    /// <summary>A single weight from its raw bits.</summary>
    float One(ushort bits);
}

/// <summary>IEEE binary16 weights: one <c>cvt.f32.f16</c> per weight.</summary>
public struct Fp16Format : IWeightFormat
{
    public readonly float Low(uint pair) => Interop.IntAsFloat((ushort)(pair & 0xFFFFu));
    public readonly float High(uint pair) => Interop.IntAsFloat((ushort)(pair >> 16));
    public readonly float One(ushort bits) => Interop.IntAsFloat(bits);
}

/// <summary>bfloat16 weights: the top half of an fp32, so widening is a shift or a mask.</summary>
public struct Bf16Format : IWeightFormat
{
    public readonly float Low(uint pair) => Interop.IntAsFloat(pair << 16);
    public readonly float High(uint pair) => Interop.IntAsFloat(pair & 0xFFFF0000u);
    public readonly float One(ushort bits) => Interop.IntAsFloat((uint)bits << 16);
}

/// <summary>One array a weight matrix occupies on the device, as bytes per row.</summary>
/// <param name="Suffix">appended to the tensor's name for the allocation ("" for the only plane)</param>
/// <param name="Description">what the plane holds</param>
/// <param name="ElementBytes">bytes per element of the plane</param>
/// <param name="BytesPerRow">bytes of one row of a matrix with <c>cols</c> input values</param>
public sealed record WeightPlane(string Suffix, string Description, int ElementBytes, Func<long, long> BytesPerRow);

/// <summary>
/// A weight format as data: the name the CLI uses, the block shape and bytes per block along a
/// row's input dimension, the device layout of a row (<see cref="Planes"/>), the device struct the
/// weight-reading kernels are specialised with, and the host-side encoding. Everything that
/// depends on the weight type (option parsing, the memory formula, bytes moved, the kernel
/// catalog, kernel dispatch, weight upload) reads this record; a new format is a new entry in
/// <see cref="All"/>.
/// </summary>
public abstract record WeightFormat
{
    private protected WeightFormat(string name, string description, int blockSize, int bytesPerBlock, Type deviceType)
    {
        Name = name;
        Description = description;
        BlockSize = blockSize;
        BytesPerBlock = bytesPerBlock;
        DeviceType = deviceType;
    }

    /// <summary>The name on the command line and in kernel names (<c>matvec_fp16_b1</c>).</summary>
    public string Name { get; }

    /// <summary>One line for help texts.</summary>
    public string Description { get; }

    /// <summary>Consecutive weights of a row that share one block (1: plain 16-bit values).</summary>
    public int BlockSize { get; }

    /// <summary>Bytes one block occupies on the device.</summary>
    public int BytesPerBlock { get; }

    /// <summary>The <see cref="IWeightFormat"/> struct the kernels are specialised with.</summary>
    public Type DeviceType { get; }

    /// <summary>Device layout of one row of a matrix: the arrays it occupies.</summary>
    public abstract IReadOnlyList<WeightPlane> Planes { get; }

    /// <summary>Format of the 1-D weights (norms) of a model whose matrices use this format.</summary>
    public abstract SixteenBitFormat VectorFormat { get; }

    /// <summary>Bits per weight on the device.</summary>
    public double BitsPerWeight => 8.0 * BytesPerBlock / BlockSize;

    /// <summary>Device bytes of a [rows, cols] matrix: rows x cols / block size x bytes per block.</summary>
    public long MatrixBytes(long rows, long cols) => checked(rows * (cols / BlockSize) * BytesPerBlock);

    /// <summary>Device bytes of a 1-D weight of <paramref name="n"/> values (always <see cref="VectorFormat"/>).</summary>
    public long VectorBytes(long n) => checked(n * VectorFormat.BytesPerBlock);

    /// <summary>The formula of <see cref="MatrixBytes"/> as text, for the memory report.</summary>
    public string MatrixBytesFormula => BlockSize == 1 ? $"parameters x {BytesPerBlock} B" : $"rows x in/{BlockSize} x {BytesPerBlock} B";

    /// <summary>IEEE binary16: the default, the only 16-bit type a P100 computes with natively.</summary>
    public static SixteenBitFormat Fp16 { get; } = new Float16Format();

    /// <summary>bfloat16, kept exactly as Llama checkpoints store it.</summary>
    public static SixteenBitFormat Bf16 { get; } = new BFloat16Format();

    /// <summary>Every format, the default first.</summary>
    public static IReadOnlyList<WeightFormat> All { get; } = [Fp16, Bf16];

    /// <summary>The formats of plain 16-bit values (what 1-D weights use, and what the 16-bit kernels read).</summary>
    public static IReadOnlyList<SixteenBitFormat> SixteenBit { get; } = All.OfType<SixteenBitFormat>().ToArray();

    /// <summary>Every format name, for option parsing and help.</summary>
    public static IReadOnlyList<string> Names { get; } = All.Select(f => f.Name).ToArray();

    /// <summary>The format named <paramref name="name"/> (case-insensitive), or null.</summary>
    public static WeightFormat? Find(string name) => All.FirstOrDefault(f => string.Equals(f.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>The format named <paramref name="name"/>; an <see cref="ArgumentException"/> listing the known names otherwise.</summary>
    public static WeightFormat Parse(string name) =>
        Find(name) ?? throw new ArgumentException($"unknown weight format '{name}'; known formats: {string.Join(", ", Names)}", nameof(name));

    /// <inheritdoc/>
    public sealed override string ToString() => Name;
}

/// <summary>A format of plain 16-bit values: block size 1, one plane, exact host encode/decode.</summary>
public abstract record SixteenBitFormat : WeightFormat
{
    private protected SixteenBitFormat(string name, string description, Type deviceType)
        : base(name, description, 1, 2, deviceType)
    {
        Planes = [new WeightPlane("", $"{name} values, row-major [rows, in]", 2, cols => 2 * cols)];
    }

    /// <inheritdoc/>
    public override IReadOnlyList<WeightPlane> Planes { get; }

    /// <inheritdoc/>
    public override SixteenBitFormat VectorFormat => this;

    /// <summary>The exact value of 16-bit weight bits.</summary>
    public abstract double Decode(ushort bits);

    /// <summary>
    /// Rounds a value to this format's bits with IEEE round-to-nearest-even (NaN stays NaN). The one
    /// rounding helper shared by weight filling, the demo model and the kernel references.
    /// </summary>
    public abstract ushort Encode(double value);
}

sealed record Float16Format() : SixteenBitFormat("fp16", "IEEE binary16 (default; native on a P100)", typeof(Fp16Format))
{
    public override double Decode(ushort bits) => (double)BitConverter.UInt16BitsToHalf(bits);

    public override ushort Encode(double value) => BitConverter.HalfToUInt16Bits((System.Half)value);
}

sealed record BFloat16Format() : SixteenBitFormat("bf16", "bfloat16, as Llama checkpoints store it", typeof(Bf16Format))
{
    public override double Decode(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    public override ushort Encode(double value)
    {
        uint bits = BitConverter.SingleToUInt32Bits((float)value);
        if (float.IsNaN((float)value))
            return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}
