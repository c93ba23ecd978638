namespace IlgpuLlama.Engine;

/// <summary>
/// The engine's one deterministic pseudo-random stream (64-bit LCG with Knuth's MMIX constants,
/// the top 53 bits as a double): random weights of presets, benchmarks and the built-in demo
/// model, reproducible on every machine.
/// </summary>
public struct DeterministicNoise(ulong seed)
{
    ulong state = seed;

    /// <summary>The next value, uniform in [-1, 1).</summary>
    public double NextSymmetric()
    {
        state = state * 6364136223846793005UL + 1442695040888963407UL;
        return ((state >> 11) * (1.0 / (1UL << 53))) * 2 - 1;
    }
}
