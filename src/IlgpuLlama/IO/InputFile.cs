namespace IlgpuLlama.IO;

/// <summary>
/// How every file the program reads is opened: only a regular file (or a symbolic link to one) is
/// read. A FIFO, socket or device node is refused before it is opened, with one message naming it
/// (<c>X is a FIFO, not a regular file; ...</c>): opening a FIFO waits for a writer, so config.json,
/// model.safetensors, a tokenizer file, --prompt-file, --file, --from or a .npy file that was a FIFO
/// blocked forever. The same policy as <see cref="OutputFile"/> for outputs. A path that does not
/// exist, or is a directory, is left to the caller's own message (and the runtime's exception).
/// Standard input (<c>-</c>) is the callers' to handle where an option takes it.
/// </summary>
public static class InputFile
{
    /// <summary>Throws <see cref="NotARegularFileException"/> when <paramref name="path"/> exists and is a FIFO, socket or device.</summary>
    public static string Check(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (UnixFileType.Of(path) is int type && type != UnixFileType.Regular && type != UnixFileType.Directory)
            throw new NotARegularFileException($"{path} is {UnixFileType.Describe(type)}, not a regular file; give the path of a regular file (a FIFO or device would be read forever or not at all)");
        return path;
    }

    /// <summary>Opens a regular file for reading (<see cref="Check"/> first).</summary>
    public static FileStream OpenRead(string path, FileShare share = FileShare.Read, int bufferSize = 4096, FileOptions options = FileOptions.None) =>
        new(Check(path), FileMode.Open, FileAccess.Read, share, bufferSize, options);

    /// <summary><see cref="File.ReadAllBytes"/> of a regular file.</summary>
    public static byte[] ReadAllBytes(string path) => File.ReadAllBytes(Check(path));

    /// <summary><see cref="File.ReadAllText(string)"/> of a regular file.</summary>
    public static string ReadAllText(string path) => File.ReadAllText(Check(path));

    /// <summary><see cref="File.ReadLines(string)"/> of a regular file (checked now, not when enumerated).</summary>
    public static IEnumerable<string> ReadLines(string path) => File.ReadLines(Check(path));
}

/// <summary>An input path that is a FIFO, socket or device node (<see cref="InputFile"/>); the message names it and the fix.</summary>
public sealed class NotARegularFileException(string message) : IOException(message);
