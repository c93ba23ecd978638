namespace IlgpuLlama.Kernels;

/// <summary>ggml Q8_0: 34 bytes per block of 32 weights (int8 quants, fp16 scale).</summary>
public sealed record Q8_0Format() : ScaledBlockFormat("q8_0", "ggml Q8_0: int8 quants and an fp16 scale per 32 weights (8.5 bits per weight)", 32, typeof(Q8_0Format.Device))
{
    public override bool SignedQuants => true;

    public override string QuantsLayout => "I8 [rows, in]";

    public override int LargestQuant => 127;

    // ggml quantize_row_q8_0_ref: amax = max |x|; d = amax / 127; id = d ? 1/d : 0; q = roundf(x * id).
    public override ushort QuantizeBlock(ReadOnlySpan<float> x, Span<byte> quants)
    {
        float amax = 0f;
        for (int j = 0; j < Block; j++)
            amax = MathF.Max(amax, MathF.Abs(x[j]));
        float d = amax / 127f;
        float id = d != 0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < Block; j++)
            quants[j] = unchecked((byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero));
        return Half(d);
    }

    public override float DequantizeBlockValue(ReadOnlySpan<byte> quants, ushort scale, int j) => (sbyte)quants[j] * Single(scale);

    /// <summary>
    /// Q8_0 on the device: int8 quants [rows, in] (a 128-bit chunk = 16 quants) and one fp16 scale per
    /// 32 weights in the scales plane [rows, in / 32]; weight = q * d.
    /// </summary>
    public struct Device : IWeightFormat
    {
        public readonly int ChunkWeights => 16;
        public readonly int BlockWeights => Block;
        // A chunk holds twice an fp16 chunk's weights: two in flight move as many weights per thread as four fp16 chunks.
        public readonly int ChunksInFlight => 2;
        public readonly float Low(uint pair) => 0f;
        public readonly float High(uint pair) => 0f;
        public readonly float One(ushort bits) => 0f;
        public readonly float Norm(ushort bits) => Interop.IntAsFloat(bits);
        public readonly int SideWords => 1;

        public readonly Acc8 SuperChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<ushort> sideA, ArrayView<ushort> sideB, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm => p;

        public readonly void SuperSixteen(ArrayView<U4> quants, ArrayView<ushort> side, int row, int cols, int kb, out W8 lo, out W8 hi)
        {
            lo = default;
            hi = default;
        }

        public readonly float SuperWeight(ArrayView<byte> quants, ArrayView<ushort> side, int row, int cols, int d) => 0f;

        public readonly Acc8 BlockChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm
        {
            // Word w holds the int8 quants of weights 16c + 4w .. 16c + 4w + 3.
            int xi = 4 * c;
            p = MatVecKernels.Quad<Device, TN>(p, Int8Quad(wa.X), Int8Quad(wb.X), g, 16 * c, x, xi, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, Int8Quad(wa.Y), Int8Quad(wb.Y), g, 16 * c + 4, x, xi + 1, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, Int8Quad(wa.Z), Int8Quad(wb.Z), g, 16 * c + 8, x, xi + 2, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, Int8Quad(wa.W), Int8Quad(wb.W), g, 16 * c + 12, x, xi + 3, k4, batch);
            return p;
        }

        public readonly void DequantizeSixteen(U4 q, int kb, float d, out W8 lo, out W8 hi)
        {
            lo = Int8Eight(q.X, q.Y, d);
            hi = Int8Eight(q.Z, q.W, d);
        }

        public readonly float Quant(ArrayView<byte> quants, int row, int cols, int d, int block, int j) => (sbyte)quants[row * cols + d];

        /// <summary>Four int8 quants of a 32-bit word as floats.</summary>
        static F4 Int8Quad(uint word)
        {
            F4 r;
            r.X = (sbyte)(word & 0xFFu);
            r.Y = (sbyte)((word >> 8) & 0xFFu);
            r.Z = (sbyte)((word >> 16) & 0xFFu);
            r.W = (sbyte)(word >> 24);
            return r;
        }

        /// <summary>Eight int8 quants (two words) times the block scale.</summary>
        static W8 Int8Eight(uint a, uint b, float d)
        {
            W8 r;
            r.V0 = (sbyte)(a & 0xFFu) * d;
            r.V1 = (sbyte)((a >> 8) & 0xFFu) * d;
            r.V2 = (sbyte)((a >> 16) & 0xFFu) * d;
            r.V3 = (sbyte)(a >> 24) * d;
            r.V4 = (sbyte)(b & 0xFFu) * d;
            r.V5 = (sbyte)((b >> 8) & 0xFFu) * d;
            r.V6 = (sbyte)((b >> 16) & 0xFFu) * d;
            r.V7 = (sbyte)(b >> 24) * d;
            return r;
        }
    }
}
