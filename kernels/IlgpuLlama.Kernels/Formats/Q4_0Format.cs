namespace IlgpuLlama.Kernels;

/// <summary>ggml Q4_0: 18 bytes per block of 32 weights (4-bit quants, fp16 scale).</summary>
public sealed record Q4_0Format() : ScaledBlockFormat("q4_0", "ggml Q4_0: 4-bit quants and an fp16 scale per 32 weights (4.5 bits per weight)", 16, typeof(Q4_0Format.Device))
{
    public override bool SignedQuants => false;

    public override string QuantsLayout => "U8 [rows, in / 2], byte j = q_j | q_{j+16} << 4 per block";

    public override int LargestQuant => 8;

    // ggml quantize_row_q4_0_ref: max = the value of largest magnitude (first on ties); d = max / -8;
    // id = d ? 1/d : 0; q = min(15, (int8_t)(x * id + 8.5)); byte j = q_j | q_{j+16} << 4.
    public override ushort QuantizeBlock(ReadOnlySpan<float> x, Span<byte> quants)
    {
        float amax = 0f, max = 0f;
        for (int j = 0; j < Block; j++)
        {
            float v = x[j];
            if (amax < MathF.Abs(v))
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }
        float d = max / -8f;
        float id = d != 0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < Block / 2; j++)
        {
            float x0 = x[j] * id;
            float x1 = x[Block / 2 + j] * id;
            int q0 = Math.Min(15, unchecked((int)(sbyte)(x0 + 8.5f)));
            int q1 = Math.Min(15, unchecked((int)(sbyte)(x1 + 8.5f)));
            quants[j] = (byte)(q0 | (q1 << 4));
        }
        return Half(d);
    }

    public override float DequantizeBlockValue(ReadOnlySpan<byte> quants, ushort scale, int j)
    {
        int q = j < Block / 2 ? quants[j] & 0x0F : quants[j - Block / 2] >> 4;
        return (q - 8) * Single(scale);
    }

    /// <summary>
    /// Q4_0 on the device: 16 bytes per block of 32 weights [rows, in / 2] (a 128-bit chunk is one
    /// block: byte j holds q_j in its low nibble and q_{j+16} in its high nibble) and one fp16 scale per
    /// block in the scales plane [rows, in / 32]; weight = (q - 8) * d.
    /// </summary>
    public struct Device : IWeightFormat
    {
        public readonly int ChunkWeights => 32;
        public readonly int BlockWeights => Block;
        // A chunk is a whole block of 32 weights: one per row at a time keeps the dequantised values and the batch's inputs in registers without spilling.
        public readonly int ChunksInFlight => 1;
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
            // The chunk is one block: word w's low nibbles are weights 4w .. 4w + 3, its high nibbles 16 + 4w .. 16 + 4w + 3.
            int xi = 8 * c, w0 = 32 * c;
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.X, 0), NibbleQuad(wb.X, 0), g, w0, x, xi, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.Y, 0), NibbleQuad(wb.Y, 0), g, w0 + 4, x, xi + 1, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.Z, 0), NibbleQuad(wb.Z, 0), g, w0 + 8, x, xi + 2, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.W, 0), NibbleQuad(wb.W, 0), g, w0 + 12, x, xi + 3, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.X, 4), NibbleQuad(wb.X, 4), g, w0 + 16, x, xi + 4, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.Y, 4), NibbleQuad(wb.Y, 4), g, w0 + 20, x, xi + 5, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.Z, 4), NibbleQuad(wb.Z, 4), g, w0 + 24, x, xi + 6, k4, batch);
            p = MatVecKernels.Quad<Device, TN>(p, NibbleQuad(wa.W, 4), NibbleQuad(wb.W, 4), g, w0 + 28, x, xi + 7, k4, batch);
            return p;
        }

        public readonly void DequantizeSixteen(U4 q, int kb, float d, out W8 lo, out W8 hi)
        {
            // The chunk is the row's whole block: k = kb..kb+15 are its low nibbles (kb at a block start) or its high ones.
            int shift = kb % Block == 0 ? 0 : 4;
            lo = NibbleEight(q.X, q.Y, shift, d);
            hi = NibbleEight(q.Z, q.W, shift, d);
        }

        public readonly float Quant(ArrayView<byte> quants, int row, int cols, int d, int block, int j)
        {
            int half = Block / 2;
            int b = quants[row * (cols / 2) + block * half + (j < half ? j : j - half)];
            int q = j < half ? b & 0xF : b >> 4;
            return q - 8;
        }

        /// <summary>The low (<paramref name="shift"/> 0) or high (4) nibbles of a word's four bytes, minus 8, as floats.</summary>
        static F4 NibbleQuad(uint word, int shift)
        {
            uint w = word >> shift;
            F4 r;
            r.X = (int)(w & 0xFu) - 8;
            r.Y = (int)((w >> 8) & 0xFu) - 8;
            r.Z = (int)((w >> 16) & 0xFu) - 8;
            r.W = (int)((w >> 24) & 0xFu) - 8;
            return r;
        }

        /// <summary>Eight 4-bit quants (the low or high nibbles of two words' bytes), minus 8, times the block scale.</summary>
        static W8 NibbleEight(uint a, uint b, int shift, float d)
        {
            a >>= shift;
            b >>= shift;
            W8 r;
            r.V0 = ((int)(a & 0xFu) - 8) * d;
            r.V1 = ((int)((a >> 8) & 0xFu) - 8) * d;
            r.V2 = ((int)((a >> 16) & 0xFu) - 8) * d;
            r.V3 = ((int)((a >> 24) & 0xFu) - 8) * d;
            r.V4 = ((int)(b & 0xFu) - 8) * d;
            r.V5 = ((int)((b >> 8) & 0xFu) - 8) * d;
            r.V6 = ((int)((b >> 16) & 0xFu) - 8) * d;
            r.V7 = ((int)((b >> 24) & 0xFu) - 8) * d;
            return r;
        }
    }
}
