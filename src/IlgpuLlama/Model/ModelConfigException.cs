namespace IlgpuLlama.Model;

/// <summary>
/// A model configuration, or the weights checked against it, cannot be used. The message is one line
/// naming the file (and key or tensor) and the first problem; <see cref="Problems"/> lists them all.
/// </summary>
public sealed class ModelConfigException : Exception
{
    /// <summary>Creates the exception for a single problem.</summary>
    public ModelConfigException(string message) : base(message) => Problems = [message];

    /// <summary>Creates the exception for a single problem with its low-level cause.</summary>
    public ModelConfigException(string message, Exception innerException) : base(message, innerException) => Problems = [message];

    /// <summary>Creates the exception for several problems; the message carries the first and how many more there are.</summary>
    public ModelConfigException(string message, IReadOnlyList<string> problems) : base(message) => Problems = problems;

    /// <summary>Every problem found, first one first; each is a complete one-line message.</summary>
    public IReadOnlyList<string> Problems { get; }
}
