namespace IlgpuLlama.Kernels;

/// <summary>ggml Q5_K: 176 bytes per super-block of 256 weights (5-bit quants, 6-bit scales and mins per 32).</summary>
public sealed record Q5_KFormat() : KQuantFormat("q5_k", "ggml Q5_K: 5-bit quants, 6-bit scales and mins per 32 weights, fp16 per 256 (5.5 bits per weight)", KQuantType.Q5_K, Words, typeof(Q5_KFormat.Device))
{
    /// <summary>Side words per super-block: d, dmin, 12 bytes of packed scales and mins, then the 32 bytes of high bits (qh).</summary>
    public const int Words = 24;

    /// <summary>The side word where the high bits start.</summary>
    const int HighBits = 8;

    public override string QuantsLayout => "U8 [rows, in / 2], ggml's qs (low 4 bits): per 64 weights, byte l = q_l | q_{l+32} << 4";

    public override int LargestQuant => 31 * 63;

    protected override string SideDescription => "per 256 weights: fp16 d and dmin, 12 bytes of 6-bit sub-block scales and mins, 32 bytes of fifth bits";

    protected override int QuantsOffset => 48;

    public override bool ScalesFinite(ReadOnlySpan<ushort> side) => Finite(side[0]) && Finite(side[1]);

    /// <summary>
    /// Q5_K on the device: Q4_K's layout (see <see cref="Q4_KFormat.Device"/>) with each quant's fifth
    /// bit in the side words: byte l of qh holds it for weight l of sub-block 2j (bit 2j) and 2j + 1
    /// (bit 2j + 1) of every group j; weight = d * sc * q - dmin * m.
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
            int sb = c >> 3, k = c & 7, j = k >> 1, h = k & 1;
            int wLo = sb * KQuants.SuperBlock + 64 * j + 16 * h;
            int b = sb * Words, qh = b + HighBits + 8 * h;
            KQuantDevice.PairScales(sideA, b, j, out float sLoA, out float oLoA, out float sHiA, out float oHiA);
            KQuantDevice.PairScales(sideB, b, j, out float sLoB, out float oLoB, out float sHiB, out float oHiB);
            p = Word<TN>(p, wa.X, wb.X, KQuantDevice.Pair(sideA, qh), KQuantDevice.Pair(sideB, qh), 2 * j, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo, x, k4, batch);
            p = Word<TN>(p, wa.Y, wb.Y, KQuantDevice.Pair(sideA, qh + 2), KQuantDevice.Pair(sideB, qh + 2), 2 * j, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo + 4, x, k4, batch);
            p = Word<TN>(p, wa.Z, wb.Z, KQuantDevice.Pair(sideA, qh + 4), KQuantDevice.Pair(sideB, qh + 4), 2 * j, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo + 8, x, k4, batch);
            p = Word<TN>(p, wa.W, wb.W, KQuantDevice.Pair(sideA, qh + 6), KQuantDevice.Pair(sideB, qh + 6), 2 * j, sLoA, oLoA, sHiA, oHiA, sLoB, oLoB, sHiB, oHiB, g, wLo + 12, x, k4, batch);
            return p;
        }

        /// <summary>One word of rows A and B (and their high-bit bytes): weights w..w+3 (low nibbles, bit <paramref name="bit"/>) and w+32..w+35 (high nibbles, bit + 1).</summary>
        static Acc8 Word<TN>(Acc8 p, uint a, uint b, uint highA, uint highB, int bit, float sLoA, float oLoA, float sHiA, float oHiA, float sLoB, float oLoB, float sHiB, float oHiB,
            ArrayView<U4> g, int w, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm
        {
            p = MatVecKernels.Quad<Device, TN>(p, KQuantDevice.Quad(a, 0, highA, bit, 1, 0, sLoA, oLoA), KQuantDevice.Quad(b, 0, highB, bit, 1, 0, sLoB, oLoB), g, w, x, w >> 2, k4, batch);
            return MatVecKernels.Quad<Device, TN>(p, KQuantDevice.Quad(a, 4, highA, bit + 1, 1, 0, sHiA, oHiA), KQuantDevice.Quad(b, 4, highB, bit + 1, 1, 0, sHiB, oHiB), g, w + 32, x, (w + 32) >> 2, k4, batch);
        }

        public readonly void SuperSixteen(ArrayView<U4> quants, ArrayView<ushort> side, int row, int cols, int kb, out W8 lo, out W8 hi)
        {
            int sb = kb >> 8, w = kb & 255, j = w >> 6, half = (w >> 5) & 1, h = (w >> 4) & 1;
            U4 q = quants[row * (cols >> 5) + sb * 8 + 2 * j + h];
            int b = (row * (cols >> 8) + sb) * Words, qh = b + HighBits + 8 * h;
            KQuantDevice.PairScales(side, b, j, out float sLo, out float oLo, out float sHi, out float oHi);
            float s = half == 0 ? sLo : sHi, o = half == 0 ? oLo : oHi;
            int bit = 2 * j + half;
            lo = KQuantDevice.Eight(q.X, q.Y, 4 * half, KQuantDevice.Pair(side, qh), KQuantDevice.Pair(side, qh + 2), bit, 1, 0, s, o);
            hi = KQuantDevice.Eight(q.Z, q.W, 4 * half, KQuantDevice.Pair(side, qh + 4), KQuantDevice.Pair(side, qh + 6), bit, 1, 0, s, o);
        }

        public readonly float SuperWeight(ArrayView<byte> quants, ArrayView<ushort> side, int row, int cols, int d)
        {
            int sb = d >> 8, w = d & 255, j = w >> 6, half = (w >> 5) & 1, l = w & 31;
            int b = (row * (cols >> 8) + sb) * Words;
            int q = ((quants[row * (cols >> 1) + sb * 128 + 32 * j + l] >> (4 * half)) & 0xF)
                | (((KQuantDevice.Byte(side, b + HighBits, l) >> (2 * j + half)) & 1) << 4);
            KQuantDevice.PairScales(side, b, j, out float sLo, out float oLo, out float sHi, out float oHi);
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
