namespace IlgpuLlama.Kernels;

/// <summary>ggml Q4_K: 144 bytes per super-block of 256 weights (4-bit quants, 6-bit scales and mins per 32).</summary>
public sealed record Q4_KFormat() : KQuantFormat("q4_k", "ggml Q4_K: 4-bit quants, 6-bit scales and mins per 32 weights, fp16 per 256 (4.5 bits per weight)", KQuantType.Q4_K, Words, typeof(Q4_KFormat.Device))
{
    /// <summary>Side words per super-block: d, dmin and the 12 bytes of packed 6-bit scales and mins.</summary>
    public const int Words = 8;

    public override string QuantsLayout => "U8 [rows, in / 2], ggml's qs: per 64 weights, byte l = q_l | q_{l+32} << 4";

    public override int LargestQuant => 15 * 63;

    protected override string SideDescription => "per 256 weights: fp16 d and dmin, 12 bytes of 6-bit sub-block scales and mins";

    protected override int QuantsOffset => 16;

    public override bool ScalesFinite(ReadOnlySpan<ushort> side) => Finite(side[0]) && Finite(side[1]);

    /// <summary>
    /// Q4_K on the device: the quants plane is ggml's qs (128 bytes per super-block: 32-byte groups j
    /// whose low nibbles are sub-block 2j and high nibbles sub-block 2j + 1), the side plane its header
    /// (8 words per super-block). A 128-bit chunk is 16 bytes of one group: 16 weights of each of its two
    /// sub-blocks; weight = d * sc * q - dmin * m.
    /// </summary>
    public struct Device : IWeightFormat
    {
        public readonly int ChunkWeights => 32;
        public readonly int BlockWeights => KQuants.SuperBlock;
        public readonly int ChunksInFlight => 1;
        public readonly int SideWords => Words;
        public readonly float Low(uint pair) => 0f;
        public readonly float High(uint pair) => 0f;
        public readonly float One(ushort bits) => 0f;
        public readonly float Norm(ushort bits) => Interop.IntAsFloat(bits);

        public readonly Acc8 SuperChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<ushort> sideA, ArrayView<ushort> sideB, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm
        {
            int sb = c >> 3, k = c & 7, j = k >> 1;
            int wLo = sb * KQuants.SuperBlock + 64 * j + 16 * (k & 1);
            KQuantDevice.PairScales(sideA, sb * Words, j, out float sLoA, out float oLoA, out float sHiA, out float oHiA);
            KQuantDevice.PairScales(sideB, sb * Words, j, out float sLoB, out float oLoB, out float sHiB, out float oHiB);
            p = Word<TN>(p, wa.X, wb.X, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo, x, k4, batch);
            p = Word<TN>(p, wa.Y, wb.Y, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo + 4, x, k4, batch);
            p = Word<TN>(p, wa.Z, wb.Z, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo + 8, x, k4, batch);
            p = Word<TN>(p, wa.W, wb.W, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo + 12, x, k4, batch);
            return p;
        }

        /// <summary>One word of rows A and B: weights w..w+3 (low nibbles) and w+32..w+35 (high nibbles).</summary>
        static Acc8 Word<TN>(Acc8 p, uint a, uint b, float sLoA, float oLoA, float sHiA, float oHiA, float sLoB, float oLoB, float sHiB, float oHiB,
            ArrayView<U4> g, int w, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm
        {
            p = MatVecKernels.Quad<Device, TN>(p, KQuantDevice.Quad(a, 0, 0, 0, 0, 0, sLoA, oLoA), KQuantDevice.Quad(b, 0, 0, 0, 0, 0, sLoB, oLoB), g, w, x, w >> 2, k4, batch);
            return MatVecKernels.Quad<Device, TN>(p, KQuantDevice.Quad(a, 4, 0, 0, 0, 0, sHiA, oHiA), KQuantDevice.Quad(b, 4, 0, 0, 0, 0, sHiB, oHiB), g, w + 32, x, (w + 32) >> 2, k4, batch);
        }

        public readonly void SuperSixteen(ArrayView<U4> quants, ArrayView<ushort> side, int row, int cols, int kb, out W8 lo, out W8 hi)
        {
            // Weights kb..kb+15 are 16 bytes of group j: the low nibbles of sub-block 2j or the high ones of 2j + 1.
            int sb = kb >> 8, w = kb & 255, j = w >> 6, half = (w >> 5) & 1;
            U4 q = quants[row * (cols >> 5) + sb * 8 + 2 * j + ((w >> 4) & 1)];
            KQuantDevice.PairScales(side, (row * (cols >> 8) + sb) * Words, j, out float sLo, out float oLo, out float sHi, out float oHi);
            float s = half == 0 ? sLo : sHi, o = half == 0 ? oLo : oHi;
            lo = KQuantDevice.Eight(q.X, q.Y, 4 * half, 0, 0, 0, 0, 0, s, o);
            hi = KQuantDevice.Eight(q.Z, q.W, 4 * half, 0, 0, 0, 0, 0, s, o);
        }

        public readonly float SuperWeight(ArrayView<byte> quants, ArrayView<ushort> side, int row, int cols, int d)
        {
            int sb = d >> 8, w = d & 255, j = w >> 6, half = (w >> 5) & 1;
            int q = (quants[row * (cols >> 1) + sb * 128 + 32 * j + (w & 31)] >> (4 * half)) & 0xF;
            KQuantDevice.PairScales(side, (row * (cols >> 8) + sb) * Words, j, out float sLo, out float oLo, out float sHi, out float oHi);
            return half == 0 ? sLo * q - oLo : sHi * q - oHi;
        }

        // A K-quant is read with the Super* members.
        public readonly Acc8 BlockChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm => p;

        public readonly void DequantizeSixteen(U4 q, int kb, float d, out W8 lo, out W8 hi)
        {
            lo = default;
            hi = default;
        }

        public readonly float Quant(ArrayView<byte> quants, int row, int cols, int d, int block, int j) => 0f;
    }
}
