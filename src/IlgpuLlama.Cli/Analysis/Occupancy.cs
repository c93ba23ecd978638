namespace IlgpuLlama.Cli.Analysis;

/// <summary>Per-SM resources that bound occupancy (the inputs of CUDA's occupancy calculator).</summary>
/// <param name="Arch">sm_XY</param>
/// <param name="RegistersPerSm">32-bit registers per SM</param>
/// <param name="RegistersPerBlock">most registers one block may use</param>
/// <param name="MaxThreadsPerSm">resident threads per SM</param>
/// <param name="MaxBlocksPerSm">resident blocks per SM</param>
/// <param name="SharedPerSm">shared memory per SM (bytes; the largest carveout where configurable)</param>
/// <param name="SharedPerBlock">most shared memory one block may use without opt-in</param>
/// <param name="SharedGranularity">shared memory allocation unit (bytes)</param>
/// <param name="SharedReservedPerBlock">shared memory the driver reserves per block (1 KB from sm_80)</param>
/// <param name="RegisterGranularity">registers are allocated per warp in units of this many</param>
/// <param name="SubPartitions">register file partitions (warp schedulers) per SM</param>
public sealed record GpuSpec(string Arch, int RegistersPerSm, int RegistersPerBlock, int MaxThreadsPerSm, int MaxBlocksPerSm,
    int SharedPerSm, int SharedPerBlock, int SharedGranularity, int SharedReservedPerBlock, int RegisterGranularity, int SubPartitions)
{
    /// <summary>Threads per warp.</summary>
    public const int WarpSize = 32;

    /// <summary>Most threads per block.</summary>
    public const int MaxThreadsPerBlock = 1024;

    /// <summary>Resident warps per SM.</summary>
    public int MaxWarpsPerSm => MaxThreadsPerSm / WarpSize;

    /// <summary>Tesla P100 (GP100): 64K registers, 2048 threads, 32 blocks, 64 KB shared per SM, 48 KB per block.</summary>
    public static GpuSpec Sm60 { get; } = new("sm_60", 65536, 65536, 2048, 32, 65536, 49152, 256, 0, 256, 2);

    /// <summary>Tesla V100 (GV100), 96 KB shared carveout.</summary>
    public static GpuSpec Sm70 { get; } = new("sm_70", 65536, 65536, 2048, 32, 98304, 49152, 256, 0, 256, 4);

    /// <summary>A100 (GA100), 164 KB shared carveout, 1 KB reserved per block.</summary>
    public static GpuSpec Sm80 { get; } = new("sm_80", 65536, 65536, 2048, 32, 167936, 49152, 128, 1024, 256, 4);

    /// <summary>H100/H200 (GH100), 228 KB shared carveout, 1 KB reserved per block.</summary>
    public static GpuSpec Sm90 { get; } = new("sm_90", 65536, 65536, 2048, 32, 233472, 49152, 128, 1024, 256, 4);

    /// <summary>The spec for an architecture name.</summary>
    public static GpuSpec For(string arch) => arch.ToLowerInvariant() switch
    {
        "sm_60" => Sm60,
        "sm_70" => Sm70,
        "sm_80" => Sm80,
        "sm_90" => Sm90,
        _ => throw new ArgumentException($"no occupancy model for {arch}; use sm_60, sm_70, sm_80 or sm_90"),
    };
}

/// <summary>Theoretical occupancy of one launch configuration.</summary>
/// <param name="BlockSize">threads per block</param>
/// <param name="BlocksPerSm">resident blocks per SM</param>
/// <param name="ActiveWarps">resident warps per SM</param>
/// <param name="Fraction">active warps / maximum warps per SM</param>
/// <param name="Limiter">the resource that binds: registers, shared, warps or blocks ("-" at full occupancy)</param>
public sealed record OccupancyResult(int BlockSize, int BlocksPerSm, int ActiveWarps, double Fraction, string Limiter);

/// <summary>
/// The CUDA occupancy calculator (the arithmetic of cuda_occupancy.h) for one kernel: blocks per
/// SM = min of the warp, block, register and shared-memory limits. Registers are allocated per
/// warp, rounded up to <see cref="GpuSpec.RegisterGranularity"/>, and each register-file
/// sub-partition holds whole warps.
/// </summary>
public static class Occupancy
{
    static int RoundUp(int value, int unit) => (value + unit - 1) / unit * unit;

    /// <summary>Occupancy of blocks of <paramref name="blockSize"/> threads.</summary>
    public static OccupancyResult Compute(GpuSpec spec, int registersPerThread, int sharedBytesPerBlock, int blockSize)
    {
        if (blockSize < 1 || blockSize > GpuSpec.MaxThreadsPerBlock)
            throw new ArgumentException($"block size {blockSize} is outside 1..{GpuSpec.MaxThreadsPerBlock}");
        int warpsPerBlock = (blockSize + GpuSpec.WarpSize - 1) / GpuSpec.WarpSize;

        int byWarps = spec.MaxWarpsPerSm / warpsPerBlock;
        int byBlocks = spec.MaxBlocksPerSm;

        int byRegisters;
        int regsPerWarp = RoundUp(Math.Max(registersPerThread, 1) * GpuSpec.WarpSize, spec.RegisterGranularity);
        if (regsPerWarp * warpsPerBlock > spec.RegistersPerBlock || registersPerThread > 255)
        {
            byRegisters = 0;
        }
        else
        {
            int warpsPerPartition = spec.RegistersPerSm / spec.SubPartitions / regsPerWarp;
            byRegisters = warpsPerPartition * spec.SubPartitions / warpsPerBlock;
        }

        int byShared;
        int shared = sharedBytesPerBlock + spec.SharedReservedPerBlock;
        if (sharedBytesPerBlock > spec.SharedPerBlock)
            byShared = 0;
        else if (shared == 0)
            byShared = spec.MaxBlocksPerSm;
        else
            byShared = spec.SharedPerSm / RoundUp(shared, spec.SharedGranularity);

        int blocks = Math.Min(Math.Min(byWarps, byBlocks), Math.Min(byRegisters, byShared));
        // Name the binding limit; on a tie prefer the kernel's own resources (registers, shared).
        string limiter = blocks * warpsPerBlock == spec.MaxWarpsPerSm ? "-"
            : blocks == byRegisters ? "registers"
            : shared > 0 && blocks == byShared ? "shared"
            : blocks == byWarps ? "warps"
            : "blocks";
        int warps = blocks * warpsPerBlock;
        return new OccupancyResult(blockSize, blocks, warps, (double)warps / spec.MaxWarpsPerSm, limiter);
    }

    /// <summary>
    /// The block size CUDA's occupancy API (cuOccupancyMaxPotentialBlockSize, which ILGPU's
    /// auto-grouped launches use) picks: the largest multiple of the warp size up to 1024 that
    /// reaches the highest number of resident threads.
    /// </summary>
    public static OccupancyResult AutoBlockSize(GpuSpec spec, int registersPerThread, int sharedBytesPerBlock)
    {
        OccupancyResult? best = null;
        for (int size = GpuSpec.MaxThreadsPerBlock; size >= GpuSpec.WarpSize; size -= GpuSpec.WarpSize)
        {
            var r = Compute(spec, registersPerThread, sharedBytesPerBlock, size);
            if (best is null || r.BlocksPerSm * size > best.BlocksPerSm * best.BlockSize)
                best = r;
        }
        return best!;
    }
}
