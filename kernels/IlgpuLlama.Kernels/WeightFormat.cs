namespace IlgpuLlama.Kernels;

/// <summary>
/// How a kernel reads weights of one format: its layout constants and its device dequantisation,
/// which the matvec, GEMM and embedding kernels call where they need a weight (they never test which
/// format they run). Kernels are generic over this struct so that each format gets its own
/// specialised code with no runtime branch (every member is a constant or a pure function of its
/// arguments, inlined by ILGPU). Each format's struct is nested in its <see cref="WeightFormat"/>
/// record (Formats/*.cs), beside its host encoding and memory formula: a format is one type.
/// A 128-bit chunk of a row holds <see cref="ChunkWeights"/> weights: 8 halves, 16 int8 quants or
/// 32 nibble quants; block formats keep one fp16 scale per <see cref="BlockWeights"/> weights in a
/// separate plane.
/// </summary>
public interface IWeightFormat
{
    /// <summary>Weights in one 128-bit chunk of a row (8, 16 or 32).</summary>
    int ChunkWeights { get; }

    /// <summary>Consecutive weights of a row that share one block: 1 for the 16-bit formats (no scales, read with <see cref="Low"/>, <see cref="High"/> and <see cref="One"/>), 32 for Q8_0 and Q4_0 (one scale, applied by the kernels), 256 for the K-quants (read with the Super* members).</summary>
    int BlockWeights { get; }

    /// <summary>Chunks per row a thread of the decode matvec keeps in flight (4, 2 or 1): a tuning choice, every value computes the same result.</summary>
    int ChunksInFlight { get; }

    /// <summary>The weight in the low 16 bits of a packed pair (16-bit formats).</summary>
    float Low(uint pair);

    /// <summary>The weight in the high 16 bits of a packed pair (16-bit formats).</summary>
    float High(uint pair);

    /// <summary>A single weight from its raw bits (16-bit formats).</summary>
    float One(ushort bits);

    /// <summary>A 1-D (norm) weight of a model in this format from its raw bits (fp16 for the block formats).</summary>
    float Norm(ushort bits);

    /// <summary>
    /// Block formats (decode matvec): chunk <paramref name="c"/> of rows A and B (<paramref name="wa"/>,
    /// <paramref name="wb"/>) dotted with every batch vector of <paramref name="x"/> in quant units
    /// (norm-scaled by <paramref name="g"/> when <typeparamref name="TN"/> fuses the RMSNorm), added to
    /// <paramref name="p"/>; the kernel applies the block scales.
    /// </summary>
    Acc8 BlockChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
        where TN : struct, IInputNorm;

    /// <summary>Block formats (prefill GEMM): weights kb..kb+15 (kb a multiple of 16) of the chunk <paramref name="q"/> holding them, times the block scale <paramref name="d"/>.</summary>
    void DequantizeSixteen(U4 q, int kb, float d, out W8 lo, out W8 hi);

    /// <summary>16-bit side words per block in the scales plane: 0 for the 16-bit formats, 1 for Q8_0 and Q4_0 (the fp16 scale), more for the K-quants.</summary>
    int SideWords { get; }

    /// <summary>
    /// K-quants (decode matvec, <see cref="BlockWeights"/> 256): chunk <paramref name="c"/> of rows A and B
    /// dequantised with their own side words (<paramref name="sideA"/>, <paramref name="sideB"/>: each
    /// row's slice of the scales plane) and dotted with every batch vector, added to <paramref name="p"/>
    /// in weight units (the format applies its sub-block scales and mins itself).
    /// </summary>
    Acc8 SuperChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<ushort> sideA, ArrayView<ushort> sideB, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
        where TN : struct, IInputNorm;

    /// <summary>K-quants (prefill GEMM): weights kb..kb+15 (kb a multiple of 16) of row <paramref name="row"/> of a [rows, <paramref name="cols"/>] matrix, dequantised.</summary>
    void SuperSixteen(ArrayView<U4> quants, ArrayView<ushort> side, int row, int cols, int kb, out W8 lo, out W8 hi);

    /// <summary>K-quants (embedding): weight <paramref name="d"/> of row <paramref name="row"/> of a [rows, <paramref name="cols"/>] matrix, dequantised.</summary>
    float SuperWeight(ArrayView<byte> quants, ArrayView<ushort> side, int row, int cols, int d);

    /// <summary>Block formats (embedding): the quant of weight <paramref name="d"/> (weight <paramref name="j"/> of block <paramref name="block"/>) of row <paramref name="row"/> of a [rows, <paramref name="cols"/>] matrix.</summary>
    float Quant(ArrayView<byte> quants, int row, int cols, int d, int block, int j);
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
/// catalog, kernel dispatch, weight upload) reads this record. A new format is one record (its file
/// in Formats/, with its device struct nested) and one entry in <see cref="All"/>.
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

    /// <summary>Every kernel in the catalog that reads this format (the specialisations compiled for it).</summary>
    public IEnumerable<string> Kernels => KernelCatalog.Families.SelectMany(f => f.Kernels).SelectMany(k => k.Variants.Where(v => v.Format == this).Select(v => k.Name + v.Suffix));

    /// <summary>IEEE binary16: the default, the only 16-bit type a P100 computes with natively.</summary>
    public static SixteenBitFormat Fp16 { get; } = new Fp16Format();

    /// <summary>bfloat16, kept exactly as Llama checkpoints store it.</summary>
    public static SixteenBitFormat Bf16 { get; } = new Bf16Format();

    /// <summary>ggml Q8_0: 34 bytes per block of 32 weights (int8 quants, fp16 scale).</summary>
    public static ScaledBlockFormat Q8_0 { get; } = new Q8_0Format();

    /// <summary>ggml Q4_0: 18 bytes per block of 32 weights (4-bit quants, fp16 scale).</summary>
    public static ScaledBlockFormat Q4_0 { get; } = new Q4_0Format();

    /// <summary>ggml Q4_K: 144 bytes per super-block of 256 weights (4-bit quants, 6-bit sub-block scales and mins).</summary>
    public static BlockQuantFormat Q4_K { get; } = new Q4_KFormat();

    /// <summary>ggml Q5_K: 176 bytes per super-block of 256 weights (5-bit quants, 6-bit sub-block scales and mins).</summary>
    public static BlockQuantFormat Q5_K { get; } = new Q5_KFormat();

    /// <summary>ggml Q6_K: 210 bytes per super-block of 256 weights (6-bit quants, 8-bit sub-block scales).</summary>
    public static BlockQuantFormat Q6_K { get; } = new Q6_KFormat();

    /// <summary>Every format, the default first.</summary>
    public static IReadOnlyList<WeightFormat> All { get; } = [Fp16, Bf16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K];

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

/// <summary>
/// A ggml block format: each row is cut into blocks of <see cref="WeightFormat.BlockSize"/> consecutive
/// input values (32 for Q8_0 and Q4_0, 256 for the K-quants' super-blocks), each stored as quants and
/// side words (16-bit: the fp16 scale of Q8_0/Q4_0; a K-quant's scales, mins and high bits). On the
/// device the quants of a row are contiguous (so weight loads stay 128-bit and aligned) and the side
/// words sit apart in their own plane [rows, in / block x side words]: together exactly ggml's bytes
/// per block. Quantisation follows ggml's reference code operation for operation in fp32, so the
/// dequantised values equal ggml's bit for bit.
/// </summary>
public abstract record BlockQuantFormat : WeightFormat
{
    /// <summary>Values per block of the 32-value formats (Q8_0, Q4_0).</summary>
    public const int Block = 32;

    private protected BlockQuantFormat(string name, string description, int blockSize, int quantBytesPerBlock, int sideWords, Type deviceType)
        : base(name, description, blockSize, quantBytesPerBlock + 2 * sideWords, deviceType)
    {
        QuantBytesPerBlock = quantBytesPerBlock;
        SideWords = sideWords;
        Planes =
        [
            new WeightPlane("", $"{name} quants, {quantBytesPerBlock} bytes per block of {blockSize}, row-major", 1, cols => cols / blockSize * quantBytesPerBlock),
            new WeightPlane(ScalesSuffix, $"{SideDescription} [rows, in / {blockSize} x {sideWords}]", 2, cols => cols / blockSize * sideWords * 2),
        ];
    }

    /// <summary>Name suffix of the side plane (allocation and safetensors key: <c>X.weight.scales</c>).</summary>
    public const string ScalesSuffix = ".scales";

    /// <summary>The ggml type whose blocks these are (Q8_0, Q4_K): a GGUF tensor of that type goes to the device as it is.</summary>
    public string GgmlName => Name.ToUpperInvariant();

    /// <summary>Bytes of quants per block (32 for Q8_0, 16 for Q4_0, 128 for the K-quants).</summary>
    public int QuantBytesPerBlock { get; }

    /// <summary>16-bit side words per block (1 for Q8_0 and Q4_0: the fp16 scale).</summary>
    public int SideWords { get; }

    /// <summary>What one block's side words hold, for the allocation log and the memory report.</summary>
    protected virtual string SideDescription => "fp16 scale of each block";

    /// <inheritdoc/>
    public override IReadOnlyList<WeightPlane> Planes { get; }

    /// <inheritdoc/>
    public override SixteenBitFormat VectorFormat => Fp16;

    /// <summary>True when the quants plane holds signed bytes (safetensors I8), false for packed unsigned ones (U8).</summary>
    public abstract bool SignedQuants { get; }

    /// <summary>The quants plane's layout as a quantized checkpoint's config.json describes it.</summary>
    public abstract string QuantsLayout { get; }

    /// <summary>The largest magnitude a quant multiplies its scale by (a scale beyond fp16's range means values beyond 65504 times this).</summary>
    public abstract int LargestQuant { get; }

    /// <summary>Quants bytes of one row of <paramref name="cols"/> values.</summary>
    public long RowQuantBytes(long cols) => cols / BlockSize * QuantBytesPerBlock;

    /// <summary>Side words of one row of <paramref name="cols"/> values.</summary>
    public long RowSideWords(long cols) => cols / BlockSize * SideWords;

    /// <summary>Quantises one block of <see cref="WeightFormat.BlockSize"/> values into its quants and side words.</summary>
    public abstract void QuantizeBlock(ReadOnlySpan<float> x, Span<byte> quants, Span<ushort> side);

    /// <summary>The dequantised values of one block, as ggml's <c>dequantize_row_*</c> gives them.</summary>
    public abstract void DequantizeBlock(ReadOnlySpan<byte> quants, ReadOnlySpan<ushort> side, Span<float> y);

    /// <summary>Splits one block in ggml's byte layout (a GGUF tensor's) into its quants and side words.</summary>
    public abstract void FromGgml(ReadOnlySpan<byte> block, Span<byte> quants, Span<ushort> side);

    /// <summary>Joins one block's quants and side words into ggml's byte layout.</summary>
    public abstract void ToGgml(ReadOnlySpan<byte> quants, ReadOnlySpan<ushort> side, Span<byte> block);

    /// <summary>True when every fp16 scale among one block's side words is finite (a NaN or infinite scale is a corrupt file).</summary>
    public abstract bool ScalesFinite(ReadOnlySpan<ushort> side);

    /// <summary>Quantises a row (its length a multiple of the block size) into its quants and side words.</summary>
    public void QuantizeRow(ReadOnlySpan<float> row, Span<byte> quants, Span<ushort> side)
    {
        if (row.Length % BlockSize != 0)
            throw new ArgumentException($"{Name}: a row of {row.Length} values is not a whole number of {BlockSize}-value blocks");
        int blocks = row.Length / BlockSize;
        for (int b = 0; b < blocks; b++)
            QuantizeBlock(row.Slice(b * BlockSize, BlockSize), quants.Slice(b * QuantBytesPerBlock, QuantBytesPerBlock), side.Slice(b * SideWords, SideWords));
    }

    /// <summary>Dequantises a row (its quants and side words) into <paramref name="row"/>.</summary>
    public void DequantizeRow(ReadOnlySpan<byte> quants, ReadOnlySpan<ushort> side, Span<float> row)
    {
        int blocks = row.Length / BlockSize;
        for (int b = 0; b < blocks; b++)
            DequantizeBlock(quants.Slice(b * QuantBytesPerBlock, QuantBytesPerBlock), side.Slice(b * SideWords, SideWords), row.Slice(b * BlockSize, BlockSize));
    }

    /// <summary>Index of the first block of a row's side words whose scales are not finite, or -1.</summary>
    public int FirstNonFiniteBlock(ReadOnlySpan<ushort> side)
    {
        for (int b = 0; b < side.Length / SideWords; b++)
        {
            if (!ScalesFinite(side.Slice(b * SideWords, SideWords)))
                return b;
        }
        return -1;
    }

    /// <summary>fp32 to fp16 bits with round-to-nearest-even, as ggml's GGML_FP32_TO_FP16.</summary>
    protected static ushort Half(float d) => Fp16.Encode(d);

    /// <summary>fp16 bits to fp32, as ggml's GGML_FP16_TO_FP32.</summary>
    protected static float Single(ushort bits) => (float)Fp16.Decode(bits);

    /// <summary>True when fp16 bits are a finite value.</summary>
    protected static bool Finite(ushort bits) => (bits & 0x7C00) != 0x7C00;
}

/// <summary>
/// A ggml block format of 32 values with one fp16 scale per block (Q8_0, Q4_0): its side word is the
/// scale, and the kernels multiply each block's dot product by it.
/// </summary>
public abstract record ScaledBlockFormat : BlockQuantFormat
{
    private protected ScaledBlockFormat(string name, string description, int quantBytesPerBlock, Type deviceType)
        : base(name, description, Block, quantBytesPerBlock, 1, deviceType)
    {
    }

    /// <summary>Quantises one block of 32 values into <paramref name="quants"/> and returns the fp16 bits of its scale.</summary>
    public abstract ushort QuantizeBlock(ReadOnlySpan<float> x, Span<byte> quants);

    /// <summary>The dequantised value of weight <paramref name="j"/> (0..31) of a block.</summary>
    public abstract float DequantizeBlockValue(ReadOnlySpan<byte> quants, ushort scale, int j);

    /// <inheritdoc/>
    public sealed override void QuantizeBlock(ReadOnlySpan<float> x, Span<byte> quants, Span<ushort> side) => side[0] = QuantizeBlock(x, quants);

    /// <inheritdoc/>
    public sealed override void DequantizeBlock(ReadOnlySpan<byte> quants, ReadOnlySpan<ushort> side, Span<float> y)
    {
        for (int j = 0; j < Block; j++)
            y[j] = DequantizeBlockValue(quants, side[0], j);
    }

    /// <inheritdoc/>
    public sealed override void FromGgml(ReadOnlySpan<byte> block, Span<byte> quants, Span<ushort> side)
    {
        side[0] = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(block);
        block.Slice(2, QuantBytesPerBlock).CopyTo(quants);
    }

    /// <inheritdoc/>
    public sealed override void ToGgml(ReadOnlySpan<byte> quants, ReadOnlySpan<ushort> side, Span<byte> block)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(block, side[0]);
        quants[..QuantBytesPerBlock].CopyTo(block[2..]);
    }

    /// <inheritdoc/>
    public sealed override bool ScalesFinite(ReadOnlySpan<ushort> side) => Finite(side[0]);
}

/// <summary>
/// A ggml K-quant (Q4_K, Q5_K, Q6_K): super-blocks of 256 values in 16 or 8 sub-blocks with their own
/// 6- or 8-bit scales (and mins). The quants plane holds the 4-bit part of every quant in ggml's order
/// (128 bytes per super-block); the side words hold the rest of ggml's block (the fp16 super-block
/// scale and min, the packed sub-block scales, the high bits of Q5_K and Q6_K), so the two planes are
/// ggml's bytes exactly, rearranged. Host (de)quantisation is <see cref="KQuants"/>, bit for bit ggml's.
/// </summary>
public abstract record KQuantFormat : BlockQuantFormat
{
    private protected KQuantFormat(string name, string description, KQuantType type, int sideWords, Type deviceType)
        : base(name, description, KQuants.SuperBlock, KQuants.SuperBlock / 2, sideWords, deviceType)
    {
        Type = type;
    }

    /// <summary>The host implementation's type.</summary>
    public KQuantType Type { get; }

    /// <inheritdoc/>
    public override bool SignedQuants => false;

    /// <inheritdoc/>
    public sealed override void QuantizeBlock(ReadOnlySpan<float> x, Span<byte> quants, Span<ushort> side)
    {
        Span<byte> block = stackalloc byte[BytesPerBlock];
        KQuants.QuantizeRow(Type, x, block);
        FromGgml(block, quants, side);
    }

    /// <inheritdoc/>
    public sealed override void DequantizeBlock(ReadOnlySpan<byte> quants, ReadOnlySpan<ushort> side, Span<float> y)
    {
        Span<byte> block = stackalloc byte[BytesPerBlock];
        ToGgml(quants, side, block);
        KQuants.DequantizeRow(Type, block, y);
    }

    /// <summary>Where in ggml's block the quants plane's 128 bytes lie (the rest, in order, are the side words).</summary>
    protected abstract int QuantsOffset { get; }

    /// <inheritdoc/>
    public sealed override void FromGgml(ReadOnlySpan<byte> block, Span<byte> quants, Span<ushort> side)
    {
        int q = QuantsOffset, n = QuantBytesPerBlock;
        block.Slice(q, n).CopyTo(quants);
        var rest = System.Runtime.InteropServices.MemoryMarshal.AsBytes(side[..SideWords]);
        block[..q].CopyTo(rest);
        block[(q + n)..BytesPerBlock].CopyTo(rest[q..]);
    }

    /// <inheritdoc/>
    public sealed override void ToGgml(ReadOnlySpan<byte> quants, ReadOnlySpan<ushort> side, Span<byte> block)
    {
        int q = QuantsOffset, n = QuantBytesPerBlock;
        quants[..n].CopyTo(block[q..]);
        var rest = System.Runtime.InteropServices.MemoryMarshal.AsBytes(side[..SideWords]);
        rest[..q].CopyTo(block);
        rest[q..].CopyTo(block[(q + n)..]);
    }
}
