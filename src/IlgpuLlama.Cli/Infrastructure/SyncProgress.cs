namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// An <see cref="IProgress{T}"/> that reports on the caller's thread, in order (the framework's
/// <see cref="Progress{T}"/> posts to the thread pool, so lines could arrive late or interleaved).
/// </summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    /// <inheritdoc/>
    public void Report(T value) => report(value);
}
