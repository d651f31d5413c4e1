import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.ArrayList;
import java.util.Enumeration;
import java.util.List;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.Opcodes;
import org.objectweb.asm.tree.AbstractInsnNode;
import org.objectweb.asm.tree.ClassNode;
import org.objectweb.asm.tree.FieldInsnNode;
import org.objectweb.asm.tree.MethodInsnNode;
import org.objectweb.asm.tree.MethodNode;

/**
 * Checks a jar the way a Java 8 VM would use it, without running any of it: every class is loaded
 * and linked by this JVM (getDeclaredMethods() links the class, so the verifier checks its bytecode
 * and stack map frames; no static initializer runs), and every field and method reference from one
 * class of the jar to another is resolved with the access of the referring class (a full-privilege
 * MethodHandles.Lookup in it), so private access that only a nest allowed fails here. android.*
 * classes come from android.jar. Prints "linked N classes, resolved M references" or one line per
 * failure and exits 1.
 *
 * Usage: java LinkCheck JAR ANDROID.jar
 */
public final class LinkCheck {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("edgepack: error: usage: java LinkCheck JAR ANDROID.jar");
            System.exit(2);
        }
        // android.* (stubs, never run) below the jar; java.* from this JVM.
        ClassLoader android = new URLClassLoader(new URL[] {new File(args[1]).toURI().toURL()},
                ClassLoader.getPlatformClassLoader()) {
            @Override
            protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
                if (name.startsWith("java.") || name.startsWith("javax.") || name.startsWith("jdk.")
                        || name.startsWith("sun.")) {
                    return getParent().loadClass(name);
                }
                synchronized (getClassLoadingLock(name)) {
                    Class<?> c = findLoadedClass(name);
                    return c != null ? c : findClass(name);
                }
            }
        };
        URLClassLoader loader = new URLClassLoader(new URL[] {new File(args[0]).toURI().toURL()}, android);
        List<String> failures = new ArrayList<String>();
        List<ClassNode> nodes = new ArrayList<ClassNode>();
        try (ZipFile jar = new ZipFile(args[0])) {
            Enumeration<? extends ZipEntry> entries = jar.entries();
            while (entries.hasMoreElements()) {
                ZipEntry e = entries.nextElement();
                if (!e.getName().endsWith(".class")) {
                    continue;
                }
                ClassNode c = new ClassNode();
                try (InputStream in = jar.getInputStream(e)) {
                    new ClassReader(in).accept(c, 0);
                }
                nodes.add(c);
            }
        }
        int linked = 0, resolved = 0;
        for (ClassNode c : nodes) {
            String name = c.name.replace('/', '.');
            try {
                Class<?> k = Class.forName(name, false, loader);
                k.getDeclaredMethods();
                k.getDeclaredConstructors();
                k.getDeclaredFields();
                linked++;
            } catch (Throwable t) {
                failures.add(name + ": " + t);
            }
        }
        for (ClassNode c : nodes) {
            Class<?> caller;
            MethodHandles.Lookup lookup;
            try {
                caller = Class.forName(c.name.replace('/', '.'), false, loader);
                lookup = MethodHandles.privateLookupIn(caller, MethodHandles.lookup());
            } catch (Throwable t) {
                continue; // reported above
            }
            for (MethodNode m : c.methods) {
                for (AbstractInsnNode i : m.instructions) {
                    String ref = null;
                    try {
                        if (i instanceof MethodInsnNode) {
                            MethodInsnNode mi = (MethodInsnNode) i;
                            if (!inJar(nodes, mi.owner)) {
                                continue;
                            }
                            ref = "invoke " + mi.owner + "." + mi.name + mi.desc;
                            Class<?> owner = Class.forName(mi.owner.replace('/', '.'), false, loader);
                            MethodType type = MethodType.fromMethodDescriptorString(mi.desc, loader);
                            switch (mi.getOpcode()) {
                                case Opcodes.INVOKESTATIC:
                                    lookup.findStatic(owner, mi.name, type);
                                    break;
                                case Opcodes.INVOKESPECIAL:
                                    if (mi.name.equals("<init>") && m.name.equals("<init>")
                                            && (mi.owner.equals(c.superName) || mi.owner.equals(c.name))) {
                                        // super(...) or this(...): a protected constructor is allowed,
                                        // which findConstructor does not model; a private one only here
                                        int mod = owner.getDeclaredConstructor(type.parameterArray()).getModifiers();
                                        if (java.lang.reflect.Modifier.isPrivate(mod) && owner != caller) {
                                            throw new IllegalAccessException("private constructor of another class");
                                        }
                                    } else if (mi.name.equals("<init>")) {
                                        lookup.findConstructor(owner, type);
                                    } else {
                                        lookup.findSpecial(owner, mi.name, type, caller);
                                        if (owner == caller && !isPrivate(owner, mi.name, type)) {
                                            // dx dexes it as invoke-super, which calls the superclass's
                                            throw new IllegalAccessException("invokespecial on its own non-private method");
                                        }
                                    }
                                    break;
                                default:
                                    lookup.findVirtual(owner, mi.name, type);
                                    if (isPrivate(owner, mi.name, type)) {
                                        // a private method is a direct method in dex: invoke-direct only
                                        throw new IllegalAccessException("invokevirtual/invokeinterface on a private method");
                                    }
                            }
                            resolved++;
                        } else if (i instanceof FieldInsnNode) {
                            FieldInsnNode fi = (FieldInsnNode) i;
                            if (!inJar(nodes, fi.owner)) {
                                continue;
                            }
                            ref = "field " + fi.owner + "." + fi.name;
                            Class<?> owner = Class.forName(fi.owner.replace('/', '.'), false, loader);
                            Class<?> type = MethodType.fromMethodDescriptorString("()" + fi.desc, loader).returnType();
                            switch (fi.getOpcode()) {
                                case Opcodes.GETSTATIC: lookup.findStaticGetter(owner, fi.name, type); break;
                                case Opcodes.PUTSTATIC:
                                    // a final static is set by <clinit> only, which Lookup does not model
                                    if (m.name.equals("<clinit>") && fi.owner.equals(c.name)) {
                                        lookup.findStaticGetter(owner, fi.name, type);
                                    } else {
                                        lookup.findStaticSetter(owner, fi.name, type);
                                    }
                                    break;
                                case Opcodes.GETFIELD: lookup.findGetter(owner, fi.name, type); break;
                                default:
                                    if (m.name.equals("<init>") && fi.owner.equals(c.name)) {
                                        lookup.findGetter(owner, fi.name, type);
                                    } else {
                                        lookup.findSetter(owner, fi.name, type);
                                    }
                            }
                            resolved++;
                        }
                    } catch (Throwable t) {
                        failures.add(c.name.replace('/', '.') + "." + m.name + ": " + ref + ": " + t);
                    }
                }
            }
        }
        for (String f : failures) {
            System.out.println("FAIL " + f);
        }
        if (!failures.isEmpty()) {
            System.out.println(failures.size() + " failures");
            System.exit(1);
        }
        System.out.println("linked " + linked + " classes, resolved " + resolved + " references");
    }

    static boolean isPrivate(Class<?> owner, String name, MethodType type) {
        try {
            return java.lang.reflect.Modifier.isPrivate(
                    owner.getDeclaredMethod(name, type.parameterArray()).getModifiers());
        } catch (NoSuchMethodException e) {
            return false; // inherited, so not private
        }
    }

    static boolean inJar(List<ClassNode> nodes, String name) {
        for (ClassNode c : nodes) {
            if (c.name.equals(name)) {
                return true;
            }
        }
        return false;
    }
}
