namespace IlgpuLlama.IO;

/// <summary>
/// How every file the program writes reaches its path: the bytes go to a temporary file beside the
/// target (same directory, named after it, so the final rename is atomic and a leftover is
/// recognisable), which then replaces the target. A symbolic link is followed: the file it points
/// to is replaced and the link stays. A path that exists and is not a regular file (a directory, a
/// device node such as /dev/null, a FIFO, a socket) is refused before anything is written, so
/// nothing but a regular file is ever replaced. The temporary file is removed on every failure path,
/// including Ctrl-C and SIGTERM (<see cref="TemporaryPaths"/>).
/// </summary>
public static class OutputFile
{
    /// <summary>The path that will be replaced: <paramref name="path"/> with symbolic links resolved, checked as above.</summary>
    /// <exception cref="IOException">The target is not a regular file or its directory does not exist (message names the path and the fix).</exception>
    public static string ResolveTarget(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        var info = new FileInfo(full);
        if (info.LinkTarget is not null)
        {
            FileSystemInfo? final;
            try
            {
                final = info.ResolveLinkTarget(returnFinalTarget: true);
            }
            catch (IOException e)
            {
                throw new IOException($"{full}: a symbolic link that cannot be followed ({e.Message.TrimEnd('.')}); remove it or choose another file", e);
            }
            if (final is null)
                throw new IOException($"{full}: a symbolic link that cannot be resolved; remove it or choose another file");
            full = final.FullName;
            info = new FileInfo(full);
        }
        if (Directory.Exists(full))
            throw new IOException($"{full} is a directory; give the path of a file (inside it or elsewhere)");
        if (info.Exists && !IsRegular(info))
            throw new IOException($"{full} exists and is not a regular file (a device, FIFO or socket); choose a regular file to write");
        string? dir = Path.GetDirectoryName(full);
        if (dir is null || !Directory.Exists(dir))
            throw new DirectoryNotFoundException($"{full}: directory '{dir}' does not exist; create it first or choose another path");
        return full;
    }

    /// <summary>
    /// <see cref="ResolveTarget"/>, then creates and removes the temporary file, so a place that cannot
    /// be written (read-only, /proc, a full disk's quota) fails before any work is done.
    /// </summary>
    public static string Prepare(string path)
    {
        string target = ResolveTarget(path);
        string temp = TempPathFor(target);
        using var registration = TemporaryPaths.Register(temp);
        try
        {
            using (TemporaryPaths.CreateFile(temp, FileAccess.Write, 1))
            {
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw CannotWrite(target, e);
        }
        finally
        {
            TemporaryPaths.Delete(temp);
        }
        return target;
    }

    static IOException CannotWrite(string target, Exception e) =>
        new($"{target}: cannot write a file in {Path.GetDirectoryName(target)} ({e.GetType().Name.Replace("Exception", "")}); check its permissions and free space, or choose another path", e);

    /// <summary>
    /// Writes a file through <paramref name="write"/> as described on the class and returns the path
    /// written (the link's target when <paramref name="path"/> is a symbolic link).
    /// </summary>
    public static string Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        string target = ResolveTarget(path);
        string temp = TempPathFor(target);
        using var registration = TemporaryPaths.Register(temp);
        try
        {
            using (var stream = TemporaryPaths.CreateFile(temp, FileAccess.Write, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, target, overwrite: true);
            return target;
        }
        catch (Exception e) when (e is UnauthorizedAccessException || e is IOException && e.Message.Contains(temp, StringComparison.Ordinal))
        {
            // The runtime's message names the temporary file; the user asked for the target.
            throw CannotWrite(target, e);
        }
        finally
        {
            TemporaryPaths.Delete(temp);
        }
    }

    /// <summary>Writes <paramref name="bytes"/> as <see cref="Write(string, Action{Stream})"/> does.</summary>
    public static string WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        byte[] copy = bytes.ToArray();
        return Write(path, s => s.Write(copy));
    }

    /// <summary>Writes UTF-8 text as <see cref="Write(string, Action{Stream})"/> does.</summary>
    public static string WriteAllText(string path, string text) => WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(text));

    /// <summary>The temporary name of <paramref name="target"/>: hidden, in its directory, named after it, unique to this process.</summary>
    public static string TempPathFor(string target) =>
        Path.Combine(Path.GetDirectoryName(target)!, $".{Path.GetFileName(target)}.tmp-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");

    static bool IsRegular(FileInfo info)
    {
        if (OperatingSystem.IsWindows())
            return (info.Attributes & (FileAttributes.Device | FileAttributes.Directory)) == 0;
        // .NET reports a FIFO, socket or device node as an ordinary file and opening one to look could
        // block (a FIFO waits for a reader), so ask stat(2) for the file type.
        return UnixFileType.Of(info.FullName) is null or UnixFileType.Regular;
    }
}
